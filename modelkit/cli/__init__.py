"""The ``modelkit`` command: parse arguments, call ``modelkit.api``, render.

This package (``__init__`` here, ``commands`` and ``render`` beside it) is the
only code that prints. Errors become one line on stderr
(``Error: <what and where>``) and an exit code from ``EXIT_CODES``; a traceback is shown
only with ``MODELKIT_DEBUG=1``. Progress is one line per status on stdout, with bars on
stderr when that is a terminal, so stderr holds nothing but the error when there is one;
``--json`` prints events and results as JSON lines on stdout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import traceback
import warnings
from collections.abc import Sequence

from modelkit import api
from modelkit import errors as E
from modelkit.cli.commands import _quant_spec
from modelkit.cli.parser import EXAMPLES, build_parser
from modelkit.cli.render import _one_line, _Run, render_show, show_json

__all__ = ["EXAMPLES", "EXIT_CODES", "_quant_spec", "build_parser", "exit_code_for", "main",
           "render_show", "show_json"]

# One table: error class -> exit code (the most specific class listed wins).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (E.InvalidNameError, 11),
    (E.ModelfileError, 3),
    (E.ParameterError, 3),
    (E.TemplateError, 3),
    (E.ModelNotFoundError, 4),
    (E.FileNotFoundModelkitError, 4),
    (E.GGUFError, 5),
    (E.DigestError, 6),
    (E.ImatrixError, 13),
    (E.QuantizationError, 7),
    (E.ConvertError, 12),
    (E.StoreError, 8),
    (E.UnauthorizedError, 10),
    (E.HubError, 9),
    (E.RegistryError, 9),
    (E.ModelkitError, 1),
)
EXIT_USAGE = 2  # argparse's code for a bad command line
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a Unix tool killed by a closed pipe returns
# Loggers of the hub clients: their own timestamped lines are noise beside our status lines.
HUB_LOGGERS = ("huggingface_hub", "modelscope_hub", "modelscope", "filelock", "urllib3")


def exit_code_for(exc: BaseException) -> int:
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    debug = os.environ.get("MODELKIT_DEBUG") == "1"
    _Run.succeeded = False
    try:
        args = build_parser().parse_args(argv)
        if not debug:
            _quiet_hub_loggers()
        _load_quietly(args.uses)
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except KeyboardInterrupt:
        if _Run.succeeded:
            return 0
        print("Error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a network peer, say: a real error
            print(f"Error: {exc.strerror or exc}", file=sys.stderr)
            return 1
        # The reader went away (``| head``): stop quietly, as Unix tools do. Point stdout
        # at /dev/null so that the interpreter's final flush does not complain again.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except E.ModelkitError as exc:
        if debug:
            traceback.print_exc()
        print(f"Error: {_one_line(str(exc))}", file=sys.stderr)
        if isinstance(exc, E.UnknownQuantTypeError):  # an unknown type lists the menu
            print("allowed quantization types:\n" + "\n".join(api.quant_menu()),
                  file=sys.stderr)
        return exit_code_for(exc)
    except OSError as exc:
        if debug:
            traceback.print_exc()
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"Error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug: still one line unless debugging
        if debug:
            traceback.print_exc()
        print(f"Error: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(set MODELKIT_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def _load_quietly(names: Sequence[str]) -> None:
    """Import the API names a verb uses with SIGINT held back: a Ctrl-C then arrives as
    KeyboardInterrupt once they are in place (during an extension module's import it
    would surface as an ImportError, a traceback)."""
    blockable = hasattr(signal, "pthread_sigmask")
    if blockable:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        api.load(*names)
    finally:
        if blockable:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _stdout_closed() -> bool:
    """Whether stdout is a pipe nobody reads any more (poll reports an error on it)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno (captured), no poll
        return False


def _quiet_hub_loggers() -> None:
    """The hub clients log their own WARNING/INFO lines; modelkit reports through its
    callback, so they are dropped unless MODELKIT_DEBUG=1. A NullHandler stops the
    clients from attaching their stream handler; the level silences one already there."""
    for name in HUB_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
        logger.propagate = False
        logger.setLevel(logging.CRITICAL + 1)
    warnings.filterwarnings("ignore", module=r"(huggingface_hub|modelscope_hub|modelscope)\b")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
