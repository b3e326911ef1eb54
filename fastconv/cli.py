"""The ``fastconv`` command (also ``python -m fastconv``).

Sub-commands, each with its own ``--help``:

* ``fastconv bench``  -- every backend against every installed peer, side by side;
* ``fastconv demo``   -- the lesson's filter -> detect -> condense pipeline, as a picture;
* ``fastconv config`` -- what :func:`fastconv.show_config` prints.
"""
import sys

USAGE = """usage: fastconv {bench,demo,config} [options]

  bench    benchmark every fastconv backend against every installed peer
  demo     run the lesson's filter -> detect -> condense pipeline and draw it
           (--train: train a small convnet on the digits, draw what it learned)
  config   show version, backends, OpenMP, SIMD path and threads

Run `fastconv COMMAND --help` for a command's options."""


def main(argv=None):
    """Entry point; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from .bench import main as run
    elif command == "demo":
        from .demo import main as run
    elif command == "config":
        from ._config import show_config
        show_config()
        return 0
    else:
        print(f"fastconv: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
