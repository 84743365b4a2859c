"""Explore the embedded world by hand.

    python -m mlm_pipeline.world serve [--size tiny|default|mlm|N] [--seed S] [--version V]
                                       [--files FILES.jsonl] [--faults PLAN]
    python -m mlm_pipeline.world release [--size ...] [--seed ...] [--version ...]   (alias: version)
    python -m mlm_pipeline.world export OUT.nt|OUT.ttl [--size ...] [--seed ...] [--version ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from mlm_pipeline.world import WorldSpec, running_world


def _spec(args: argparse.Namespace) -> WorldSpec:
    return WorldSpec.from_config(size=args.size, seed=args.seed, version=args.version, files=args.files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlm_pipeline.world", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("serve", "release", "version", "export"))
    parser.add_argument("out", nargs="?", help="for export: the file to write (.nt or .ttl)")
    parser.add_argument("--size", default="default", help="tiny, default, mlm or a number of settlements")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--files", default="", help="JSONL of own files for the Commons stand-in")
    parser.add_argument("--faults", default="", help="fault plan, e.g. 'http429=0.1,seed=7'")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = _spec(args)
    except ValueError as error:
        parser.error(str(error))
    if args.command in ("release", "version"):
        from mlm_pipeline.world.rdf import load_world

        print(load_world(spec).release)
        return 0
    if args.command == "export":
        from mlm_pipeline.world.rdf import load_world, to_turtle, write_ntriples

        if not args.out or not args.out.endswith((".nt", ".ttl")):
            parser.error("export needs an output file ending in .nt or .ttl")
        world = load_world(spec)
        with open(args.out, "wb") as handle:
            if args.out.endswith(".ttl"):
                handle.write(to_turtle(world))
            else:
                write_ntriples(world, handle)
        print(f"{args.out}: world {spec.label()}, release {world.release}")
        return 0
    with running_world(spec, faults=args.faults) as served:
        print(f"world {spec.label()}: {len(served.world.places)} settlements, release {served.world.release}")
        print(f"SPARQL endpoint  {served.sparql_url}")
        print(f"Wikipedia API    {served.wikipedia_api}")
        print(f"Commons API      {served.commons_api}")
        print(f"Commons files    {served.commons_filepath}")
        print("Ctrl-C stops the servers.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
