"""Go ``text/template`` validation: the parse step of ``ollama create``'s TEMPLATE check.

:func:`validate_go_template` re-implements the parse step of Go's ``text/template``: its lexer
(trim markers, comments, strings, raw strings, character constants, numbers) and its parser
(pipelines, declarations, ``if``/``range``/``with``/``block``/``define``/``template``,
``else if``/``else with``, ``break``/``continue``, variable scopes, and the function set that
Ollama registers). It reports Go's own message, prefixed the way ``ollama create`` prefixes it:
``template error: template: :1: unexpected EOF``. Errors found only at execution time are out of
scope, as they are for Ollama at create time.
"""

from __future__ import annotations

from modelkit.errors import TemplateError
from modelkit.gotemplate.checker import Node, has_template_without_pipe
from modelkit.gotemplate.lexer import Lexer
from modelkit.gotemplate.parser import ParseError, Tree

__all__ = ["validate_go_template"]


def validate_go_template(text: str) -> None:
    """Check *text* the way ``ollama create`` checks a TEMPLATE; raise :class:`TemplateError`.

    The message is Go's parse error prefixed with ``template error: ``, for example
    ``template error: template: :1: function "foo" not defined``.
    """
    tree_set: dict[str, list[Node]] = {}
    try:
        Tree("", Lexer(text), tree_set).parse()
    except ParseError as err:
        raise TemplateError(f"template error: {err}") from None
    except RecursionError:
        raise TemplateError("template error: template is nested too deeply") from None
    # Ollama walks every parsed template and rejects {{template "name"}} without an argument.
    if any(has_template_without_pipe(nodes) for nodes in tree_set.values()):
        raise TemplateError("template error: undefined template specified")
