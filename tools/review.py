"""Review a built video in the browser: hear each line, fix it, preview it, rebuild.

    python tools/review.py --name episode01                  # in the project folder
    python tools/review.py path/to/project --name ep01 --configfile season2.yaml

Prints the URL (with its one-time token) and serves until Ctrl-C. The app reads what the
workflow wrote and writes only edits/<name>.<lang>.tsv and edits/<name>.voices.yaml;
Apply runs Snakemake in the project folder (with the same --configfile options), as a
user would. It binds to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "scripts"))

from dubflow.errors import DubflowError

HOST = "127.0.0.1"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", nargs="?", default=".",
                        help="the project folder (in/, work/, out/, edits/); default: here")
    parser.add_argument("--name", required=True, help="the video's name (out/<name>.mkv)")
    parser.add_argument("--host", default=HOST, choices=[HOST],
                        help="always 127.0.0.1: the app is for this machine only")
    parser.add_argument("--port", type=int, default=0, help="0 (default): a free port")
    parser.add_argument("--configfile", action="append", default=[],
                        help="a config file the video was built with (repeatable), "
                             "passed to Snakemake on Apply too")
    parser.add_argument("--snakefile", default=None,
                        help="the Snakefile to rebuild with (default: the folder's own, "
                             "else dubflow's)")
    parser.add_argument("--cores", type=int, default=2, help="cores for the rebuild")
    parser.add_argument("--with-report", action="store_true",
                        help="Apply also rebuilds the QA page (out/<name>.report.html)")
    parser.add_argument("--no-warm-up", action="store_true",
                        help="load voices and make the video proxy on first use")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    root = Path(args.project).resolve()
    try:
        os.chdir(root)  # relative paths in the config mean what they mean to Snakemake
        return serve(root, args)
    except DubflowError as error:
        print(f"dubflow review: {error}", file=sys.stderr)
        return 1


def serve(root: Path, args: argparse.Namespace) -> int:
    import uvicorn

    from dubflow.review import media
    from dubflow.review.app import create_app
    from dubflow.review.preview import Previewer
    from dubflow.review.project import Video, load_config
    from dubflow.review.runner import Rebuilder, snakemake_command

    config = load_config(root, args.configfile)
    video = Video(root, args.name, config)
    # the mkv only: the QA page's clips take as long again as the rest of a one-line
    # rebuild (24 s of 60 on the 10-minute bench); --with-report asks for it too
    targets = [f"out/{args.name}.mkv"]
    if args.with_report:
        targets.append(f"out/{args.name}.report.html")
    rebuilder = Rebuilder(root, args.name, snakemake_command(root, targets, args.configfile,
                                                             args.snakefile, args.cores))
    previewer = Previewer(video)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, args.port))
    sock.listen(64)  # connections wait in the backlog until the server accepts them
    port = sock.getsockname()[1]
    app, token = create_app(video, previewer, rebuilder, port_ref={"port": port})

    if not args.no_warm_up:
        def warm_up() -> None:
            previewer.warm_up()
            for lang in video.languages:
                try:
                    media.proxy(video.video_path, video.work / lang / "dub.wav", lang,
                                root / "cache" / "review" / args.name, config["ffmpeg"])
                except DubflowError as error:
                    logging.warning("no video proxy for %s: %s", lang, error)

        threading.Thread(target=warm_up, daemon=True).start()
    print(f"dubflow review of {args.name}: http://{HOST}:{port}/?token={token}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
