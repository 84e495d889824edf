"""The ``sigmadelta`` command: a thin layer over the package's public functions.

    sigmadelta demo [--frames N] [--lam L] [--synthetic] [--json FILE]
    sigmadelta data [list | fetch [NAME ...]] [--json FILE]
    sigmadelta run VIDEO --model NAME [--scales FILE | --calibrate CLIP | --checkpoint FILE] [--scheme S ...]
                   [--frames N] [--backend B] [--json FILE] [--plot FILE] [--strict]
    sigmadelta optimize --model NAME --calibrate CLIP [--lam L] [--scheme S [--learn-scheme-param LAM]] -o FILE
    sigmadelta finetune --model NAME [--lam L] [--scheme hysteresis ...] [--train CLIP ...] [-o FILE]
    sigmadelta bench --model NAME --data CLIP_OR_DATASET [--streams B] [--threads N] [--json FILE]
    sigmadelta reproduce {random-net,mnist,video,schemes,finetune} [--out DIR] [--quick]

Every argument and output path is checked before any work. The error boundary: an error of the user's making (a
:class:`~sigmadelta.SigmaDeltaError`: a bad argument, file or setting; or the machine refusing a file, an
``OSError``) prints one line naming what and where and exits with code 2; Ctrl-C exits with 130; a command's files
are written together at the end, all or none. Anything else is a bug of the package: one line asking to report it
and exit code 1, with the traceback under ``--debug``.
"""

from __future__ import annotations

import importlib
import shlex
import sys
import traceback

from ..errors import SigmaDeltaError
from .checks import check_outputs
from .parser import build_parser

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed the bad argument: return its code 2 (--help: exit as usual)
        if e.code == 2:
            return 2
        raise
    if not args.command:
        parser.print_help()
        return 0
    command = getattr(importlib.import_module(f"{__name__}.{args.command_module}"), args.command_name)
    args.command_line = shlex.join(["sigmadelta", *(sys.argv[1:] if argv is None else argv)])  # for the records
    try:
        check_outputs(args)
        return command(args)
    except KeyboardInterrupt:
        print(f"\nsigmadelta {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    except (SigmaDeltaError, OSError) as e:  # the user's arguments, files and machine
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
        print(f"sigmadelta {args.command}: error: {message}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug of the package: not the user's mistake
        debug = getattr(args, "debug", False)
        print(f"sigmadelta {args.command}: internal error ({type(e).__name__}: {e}); please report it with the "
              "command line" + ("" if debug else " (--debug prints the traceback)"), file=sys.stderr)
        if debug:
            traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
