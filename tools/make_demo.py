"""`make demo`'s helper: write the demo video, or check the demo's transcript.

    python tools/make_demo.py in/demo.mp4                       # generate (skipped if present)
    python tools/make_demo.py --check work/demo/transcript.json # WER against the script
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from demo_media import DEMO_LINES, make_demo, word_error_rate  # noqa: E402
from dubflow.errors import DubflowError  # noqa: E402

MAX_WER = 0.10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, help="where to write the demo video")
    parser.add_argument("--check", type=Path, help="a transcript.json to score against the script")
    args = parser.parse_args(argv)
    try:
        if args.video:
            if args.video.exists():
                print(f"demo video already there: {args.video}")
            else:
                for line in make_demo(args.video):
                    print(f"  {line.start:6.2f}-{line.end:6.2f}  {line.text}")
                print(f"demo video written: {args.video}")
        if args.check:
            segments = json.loads(args.check.read_text(encoding="utf-8"))["segments"]
            wer = word_error_rate(DEMO_LINES, segments)
            print(f"demo transcript WER: {wer:.1%} (limit {MAX_WER:.0%})")
            return 0 if wer <= MAX_WER else 1
    except DubflowError as error:
        print(f"dubflow: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
