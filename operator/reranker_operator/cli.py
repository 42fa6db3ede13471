"""`reranker-operator`: print the CRD, render manifests offline, or run the operator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from reranker_operator import API_VERSION, KIND
from reranker_operator.errors import InvalidSpecError

EXIT_INVALID = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reranker-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    crd = commands.add_parser("crd", help="print the RerankerDeployment CRD")
    crd.add_argument("--reference", action="store_true", help="print the field reference (Markdown) instead")
    render = commands.add_parser(
        "render", help="print every child manifest of a RerankerDeployment (no cluster)"
    )
    render.add_argument(
        "-f", "--filename", required=True, help="RerankerDeployment YAML file, or - for stdin"
    )
    render.add_argument("-n", "--namespace", help="namespace (default: the object's, else 'default')")
    commands.add_parser("run", help="run the operator (arguments after `run` go to kopf)", add_help=False)
    _add_plan_parser(commands)
    return parser


def _add_plan_parser(commands: argparse._SubParsersAction) -> None:
    from reranker_operator.capacity import DEFAULT_PROFILE, PROFILES

    plan = commands.add_parser(
        "plan", help="replicas, gpusPerPod and the HPA target for an expected load (docs/scaling.md)"
    )
    plan.add_argument("--requests-per-second", type=float, required=True, help="expected peak load")
    plan.add_argument(
        "--quiet-requests-per-second", type=float, help="load in the quiet hours (default: 1/10)"
    )
    plan.add_argument("--documents", type=float, default=96.0, help="documents per request (mean)")
    plan.add_argument("--document-tokens", type=float, default=180.0, help="tokens per document (mean)")
    plan.add_argument("--query-tokens", type=float, default=20.0, help="tokens per query")
    plan.add_argument("--latency", type=float, default=1.0, help="p95 latency target in seconds")
    plan.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help=f"measured pod profile: a YAML/JSON file or one of {', '.join(PROFILES)}",
    )


def _read_resource(filename: str) -> dict:
    text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    documents = [doc for doc in yaml.safe_load_all(text) if doc]
    resources = [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == KIND]
    if len(resources) != 1:
        raise InvalidSpecError(f"{filename}: expected exactly one {KIND} document, found {len(resources)}")
    resource = resources[0]
    if resource.get("apiVersion") != API_VERSION:
        raise InvalidSpecError(
            f"{filename}: apiVersion must be {API_VERSION}, not {resource.get('apiVersion')!r}"
        )
    return resource


def _render(filename: str, namespace: str | None) -> str:
    from reranker_operator.crd import PlainDumper
    from reranker_operator.render import load_spec, render_all

    resource = _read_resource(filename)
    metadata = resource.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        raise InvalidSpecError(f"{filename}: metadata.name is required")
    spec = load_spec(resource.get("spec"))
    manifests = render_all(name, namespace or metadata.get("namespace") or "default", spec)
    # Written out in full (no &id001 anchors): users copy pieces of this into their own manifests.
    return yaml.dump_all(manifests, Dumper=PlainDumper, sort_keys=False)


def _plan(args: argparse.Namespace) -> int:
    from reranker_operator.capacity import get_profile
    from reranker_operator.plan import Load, format_plan

    try:
        profile = get_profile(args.profile)
        load = Load(
            requests_per_second=args.requests_per_second,
            documents=args.documents,
            document_tokens=args.document_tokens,
            query_tokens=args.query_tokens,
            latency_p95_s=args.latency,
            low_requests_per_second=args.quiet_requests_per_second,
        )
    except (OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    print(format_plan(profile, load))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `reranker-operator` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        # Only `run` needs kopf; the other subcommands stay usable without a cluster.
        from reranker_operator.runner import main as run_main

        return run_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "crd":
        from reranker_operator.crd import crd_yaml, reference_markdown

        sys.stdout.write(reference_markdown() if args.reference else crd_yaml())
        return 0
    if args.command == "plan":
        return _plan(args)
    try:
        sys.stdout.write(_render(args.filename, args.namespace))
    except InvalidSpecError as error:
        print(f"error: invalid {KIND}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_INVALID
    except (OSError, yaml.YAMLError) as error:
        print(f"error: cannot read {args.filename}: {error}", file=sys.stderr)
        return EXIT_INVALID
    return 0


if __name__ == "__main__":
    sys.exit(main())
