"""Go ``text/template``'s parser (a port of parse.Tree: pipelines, declarations,
``if``/``range``/``with``/``block``/``define``/``template``, ``else if``/``else with``,
``break``/``continue``, variable scopes), keeping of each node what the checks need."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, NoReturn

from modelkit.gostrconv import StrconvError, quote, unquote
from modelkit.gotemplate.checker import (
    FUNCTIONS,
    Node,
    check_number,
    is_empty_tree,
)
from modelkit.gotemplate.lexer import (
    ASSIGN,
    BLOCK,
    BOOL,
    BREAK,
    CHAR,
    CHAR_CONSTANT,
    COMPLEX,
    CONTINUE,
    DECLARE,
    DEFINE,
    DOT,
    ELSE,
    END,
    EOF,
    ERROR,
    FIELD,
    IDENTIFIER,
    IF,
    LEFT_DELIM,
    LEFT_PAREN,
    NIL,
    NUMBER,
    PIPE,
    RANGE,
    RAW_STRING,
    RIGHT_DELIM,
    RIGHT_PAREN,
    SPACE,
    STRING,
    TEMPLATE,
    TEXT,
    VARIABLE,
    WITH,
    Lexer,
    Token,
)

_NON_EXECUTABLE = frozenset({"bool", "dot", "nil", "number", "string"})


class ParseError(Exception):
    pass


class _Marker:
    """{{end}} or {{else}}: ends an item list."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


class _Operand(NamedTuple):
    kind: str  # identifier, dot, nil, variable, field, bool, number, string, pipe, chain
    text: str


class Tree:
    """One template being parsed: a port of Go's parse.Tree (its own look-ahead buffer)."""

    def __init__(self, name: str, lexer: Lexer, tree_set: dict[str, list[Node]]) -> None:
        self.name = name
        self.lex = lexer
        self.tree_set = tree_set
        self.token: list[Token] = [Token(EOF, 0, "EOF", 1)] * 3
        self.peek_count = 0
        self.vars: list[str] = ["$"]
        self.action_line = 0
        self.range_depth = 0
        self.root: list[Node] = []

    # -- token buffer ------------------------------------------------------------------------
    def next(self) -> Token:
        if self.peek_count > 0:
            self.peek_count -= 1
        else:
            self.token[0] = self.lex.next_item()
        return self.token[self.peek_count]

    def backup(self) -> None:
        self.peek_count += 1

    def backup2(self, t1: Token) -> None:
        self.token[1] = t1
        self.peek_count = 2

    def backup3(self, t2: Token, t1: Token) -> None:
        self.token[1] = t1
        self.token[2] = t2
        self.peek_count = 3

    def peek(self) -> Token:
        if self.peek_count > 0:
            return self.token[self.peek_count - 1]
        self.peek_count = 1
        self.token[0] = self.lex.next_item()
        return self.token[0]

    def next_non_space(self) -> Token:
        while True:
            tok = self.next()
            if tok.typ != SPACE:
                return tok

    def peek_non_space(self) -> Token:
        tok = self.next_non_space()
        self.backup()
        return tok

    # -- errors ------------------------------------------------------------------------------
    def errorf(self, message: str) -> NoReturn:
        raise ParseError(f"template: :{self.token[0].line}: {message}")

    def expect(self, expected: int, context: str) -> Token:
        tok = self.next_non_space()
        if tok.typ != expected:
            self.unexpected(tok, context)
        return tok

    def unexpected(self, tok: Token, context: str) -> NoReturn:
        if tok.typ == ERROR:
            extra = ""
            if self.action_line != 0 and self.action_line != tok.line:
                extra = f" in action started at :{self.action_line}"
                if tok.val.endswith(" action"):
                    extra = extra[len(" in action"):]
            self.errorf(f"{tok}{extra}")
        self.errorf(f"unexpected {tok} in {context}")

    def literal(self, check: Callable[[], object]) -> None:
        try:
            check()
        except StrconvError as err:
            self.errorf(str(err))

    # -- structure ---------------------------------------------------------------------------
    def parse(self) -> None:
        while self.peek().typ != EOF:
            if self.peek().typ == LEFT_DELIM:
                delim = self.next()
                if self.next_non_space().typ == DEFINE:
                    Tree("definition", self.lex, self.tree_set).parse_definition()
                    continue
                self.backup2(delim)
            node = self.text_or_action()
            if isinstance(node, _Marker):
                self.errorf(f"unexpected {node}")
            else:
                self.root.append(node)
        self.add()

    def add(self) -> None:
        existing = self.tree_set.get(self.name)
        if existing is None or is_empty_tree(existing):
            self.tree_set[self.name] = self.root
            return
        if not is_empty_tree(self.root):
            self.errorf(f"template: multiple definition of template {quote(self.name)}")

    def parse_definition(self) -> None:
        context = "define clause"
        tok = self.next_non_space()
        if tok.typ not in (STRING, RAW_STRING):
            self.unexpected(tok, context)
        try:
            self.name = unquote(tok.val)
        except StrconvError as err:
            self.errorf(str(err))
        self.expect(RIGHT_DELIM, context)
        self.root, end = self.item_list()
        if str(end) != "{{end}}":
            self.errorf(f"unexpected {end} in {context}")
        self.add()

    def item_list(self) -> tuple[list[Node], _Marker]:
        nodes: list[Node] = []
        while self.peek_non_space().typ != EOF:
            node = self.text_or_action()
            if isinstance(node, _Marker):
                return nodes, node
            nodes.append(node)
        self.errorf("unexpected EOF")

    def text_or_action(self) -> Node | _Marker:
        tok = self.next_non_space()
        if tok.typ == TEXT:
            return Node("text", tok.val)
        if tok.typ == LEFT_DELIM:
            self.action_line = tok.line
            try:
                return self.action()
            finally:
                self.action_line = 0
        self.unexpected(tok, "input")

    def action(self) -> Node | _Marker:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == BLOCK:
            return self.block_control()
        if typ in (BREAK, CONTINUE):
            word = "{{break}}" if typ == BREAK else "{{continue}}"
            after = self.next_non_space()
            if after.typ != RIGHT_DELIM:
                self.unexpected(after, word)
            if self.range_depth == 0:
                self.errorf(f"{word} outside {{{{range}}}}")
            return Node("break")
        if typ == ELSE:
            peek = self.peek_non_space()
            if peek.typ not in (IF, WITH):
                self.expect(RIGHT_DELIM, "else")
            return _Marker("{{else}}")
        if typ == END:
            self.expect(RIGHT_DELIM, "end")
            return _Marker("{{end}}")
        if typ in (IF, RANGE, WITH):
            return self.control({IF: "if", RANGE: "range", WITH: "with"}[typ])
        if typ == TEMPLATE:
            return self.template_control()
        self.backup()
        self.peek()
        return Node("action", children=(self.pipeline("command", RIGHT_DELIM),))

    def control(self, context: str) -> Node:
        depth = len(self.vars)
        try:
            pipe = self.pipeline(context, RIGHT_DELIM)
            if context == "range":
                self.range_depth += 1
            body, end = self.item_list()
            if context == "range":
                self.range_depth -= 1
            children = [pipe, Node("list", children=tuple(body))]
            if str(end) == "{{else}}":
                if context == "if" and self.peek().typ == IF:
                    self.next()
                    children.append(Node("list", children=(self.control("if"),)))
                elif context == "with" and self.peek().typ == WITH:
                    self.next()
                    children.append(Node("list", children=(self.control("with"),)))
                else:
                    else_body, end = self.item_list()
                    if str(end) != "{{end}}":
                        self.errorf(f"expected end; found {end}")
                    children.append(Node("list", children=tuple(else_body)))
            return Node(context, children=tuple(children))
        finally:
            del self.vars[depth:]

    def block_control(self) -> Node:
        context = "block clause"
        tok = self.next_non_space()
        name = self.template_name(tok, context)
        pipe = self.pipeline(context, RIGHT_DELIM)
        block = Tree(name, self.lex, self.tree_set)
        block.root, end = block.item_list()
        if str(end) != "{{end}}":
            self.errorf(f"unexpected {end} in {context}")
        block.add()
        return Node("template", "pipe", children=(pipe,))

    def template_control(self) -> Node:
        context = "template clause"
        tok = self.next_non_space()
        self.template_name(tok, context)
        if self.next_non_space().typ != RIGHT_DELIM:
            self.backup()
            return Node("template", "pipe", children=(self.pipeline(context, RIGHT_DELIM),))
        return Node("template", "")

    def template_name(self, tok: Token, context: str) -> str:
        if tok.typ not in (STRING, RAW_STRING):
            self.unexpected(tok, context)
        try:
            return unquote(tok.val)
        except StrconvError as err:
            self.errorf(str(err))

    # -- pipelines ---------------------------------------------------------------------------
    def pipeline(self, context: str, end: int) -> Node:
        self.peek_non_space()
        declared = 0
        while True:  # declarations; the loop stands for Go's "goto decls"
            v = self.peek_non_space()
            if v.typ != VARIABLE:
                break
            self.next()
            after = self.peek()
            nxt = self.peek_non_space()
            if nxt.typ in (ASSIGN, DECLARE):
                self.next_non_space()
                declared += 1
                self.vars.append(v.val)
            elif nxt.typ == CHAR and nxt.val == ",":
                self.next_non_space()
                declared += 1
                self.vars.append(v.val)
                if context == "range" and declared < 2:
                    if self.peek_non_space().typ in (VARIABLE, RIGHT_DELIM, RIGHT_PAREN):
                        continue
                    self.errorf("range can only initialize variables")
                self.errorf(f"too many declarations in {context}")
            elif after.typ == SPACE:
                self.backup3(v, after)
            else:
                self.backup2(v)
            break
        commands: list[list[_Operand]] = []
        while True:
            tok = self.next_non_space()
            if tok.typ == end:
                if not commands:
                    self.errorf(f"missing value for {context}")
                for stage, command in enumerate(commands[1:], start=2):
                    if command[0].kind in _NON_EXECUTABLE:
                        self.errorf(f"non executable command in pipeline stage {stage}")
                return Node("pipe")
            if tok.typ in (BOOL, CHAR_CONSTANT, COMPLEX, DOT, FIELD, IDENTIFIER, NUMBER,
                           NIL, RAW_STRING, STRING, VARIABLE, LEFT_PAREN):
                self.backup()
                commands.append(self.command())
            else:
                self.unexpected(tok, context)

    def command(self) -> list[_Operand]:
        args: list[_Operand] = []
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                args.append(operand)
            tok = self.next()
            if tok.typ == SPACE:
                continue
            if tok.typ in (RIGHT_DELIM, RIGHT_PAREN):
                self.backup()
            elif tok.typ != PIPE:
                self.unexpected(tok, "operand")
            break
        if not args:
            self.errorf("empty command")
        return args

    def operand(self) -> _Operand | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == FIELD:
            while self.peek().typ == FIELD:
                self.next()
            if node.kind in _NON_EXECUTABLE:
                self.errorf(f"unexpected . after term {quote(node.text)}")
            if node.kind not in ("field", "variable"):
                node = _Operand("chain", node.text)
        return node

    def term(self) -> _Operand | None:
        tok = self.next_non_space()
        typ = tok.typ
        if typ == IDENTIFIER:
            if tok.val not in FUNCTIONS:
                self.errorf(f"function {quote(tok.val)} not defined")
            return _Operand("identifier", tok.val)
        if typ == DOT:
            return _Operand("dot", ".")
        if typ == NIL:
            return _Operand("nil", "nil")
        if typ == VARIABLE:
            if tok.val not in self.vars:
                self.errorf(f"undefined variable {quote(tok.val)}")
            return _Operand("variable", tok.val)
        if typ == FIELD:
            return _Operand("field", tok.val)
        if typ == BOOL:
            return _Operand("bool", tok.val)
        if typ in (CHAR_CONSTANT, COMPLEX, NUMBER):
            self.literal(lambda: check_number(tok.val, typ))
            return _Operand("number", tok.val)
        if typ == LEFT_PAREN:
            self.pipeline("parenthesized pipeline", RIGHT_PAREN)
            return _Operand("pipe", "")
        if typ in (STRING, RAW_STRING):
            self.literal(lambda: unquote(tok.val))
            return _Operand("string", tok.val)
        self.backup()
        return None
