"""``python -m modelkit`` and the ``modelkit`` command's entry point.

Kept free of heavy imports: a Ctrl-C while the library is still being imported (the
first second of a run) exits 130 with one line, never a traceback.
"""

import sys


def run() -> None:
    try:
        # The CLI (and the library under it) is deferred for start-up cost and so that
        # an interrupt while it loads is caught here.
        from modelkit.cli import main

        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
