"""``python -m modelkit`` and the ``modelkit`` command.

``modelkit --version`` answers before the library loads (the library imports numpy,
gguf and the hub clients: about a second on a busy machine). Any other command loads
the CLI with a hook in place that turns a Ctrl-C during those imports into one line.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from modelkit.errors import one_line_interrupt
from modelkit.version import __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        print(f"modelkit {__version__}")
        return 0
    sys.excepthook = one_line_interrupt  # (modelkit/__init__ set it already for a command)
    # A Ctrl-C is held back while the library loads (an extension module such as numpy's
    # turns one into an ImportError) and delivered once it has loaded.
    blockable = hasattr(signal, "pthread_sigmask")
    if blockable:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        # Deferred for start-up cost: --version above needs none of the library.
        from modelkit.cli import main as cli_main
    finally:
        if blockable:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    sys.excepthook = sys.__excepthook__  # the CLI's own handlers take over from here
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
