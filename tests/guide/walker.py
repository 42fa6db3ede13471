"""Walk a Markdown guide's shell commands in order, as a newcomer types them, against a model of the cluster.

Each command either creates something (a namespace, a Secret, a Helm release rendered by the real Helm library,
an applied example rendered by the operator's own renderer) or uses something (`-n NS`, `get rrd NAME`,
`get secret NAME -o jsonpath='{.data.KEY}'`, `port-forward svc/NAME L:R`, `curl localhost:L/PATH` with a model
name and an API key). A use of anything no earlier command created is a problem, reported with the line.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from reranker_operator.render import client_settings, load_spec, render_all

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_CHART = "charts/reranker-operator"
RERANKER_CHART = "charts/reranker"
SHELL_FENCES = ("bash", "sh", "shell")


@dataclass(frozen=True)
class Command:
    """One simple command: argv, the source line it came from, and `$(...)`/`VAR=` context."""

    argv: tuple[str, ...]
    line: str
    assigns: str | None = None  # VAR in VAR="$(cmd)": this command's output is stored in $VAR


def commands(markdown: str) -> list[Command]:
    """Every command of the ```bash blocks and the `$ ` lines of ```console blocks, in document order."""
    found: list[Command] = []
    # Fences may be indented (inside list items); the body is then indented as much.
    for indent, fence, body in re.findall(r"^([ \t]*)```(\w+)\n(.*?)^[ \t]*```", markdown, flags=re.M | re.S):
        body = "\n".join(
            line[len(indent) :] if line.startswith(indent) else line for line in body.splitlines()
        )
        if fence in SHELL_FENCES:
            found.extend(_parse_block(body))
        elif fence == "console":
            prompts = "\n".join(line[2:] for line in body.splitlines() if line.startswith("$ "))
            found.extend(_parse_block(prompts))
    return found


def comment_commands(text: str) -> list[Command]:
    """Commands written in a YAML file's header comments (`#   kubectl ...`)."""
    lines = [m.group(1) for m in re.finditer(r"^#\s+((?:kubectl|helm) .*)$", text, flags=re.M)]
    return _parse_block("\n".join(lines))


def _parse_block(body: str) -> Iterator[Command]:
    pending = ""
    for line in body.replace("\\\n", " ").splitlines():
        text = f"{pending}\n{line}" if pending else line
        try:
            tokens = _tokens(text)
        except ValueError:
            pending = text  # a quoted string (a JSON body) continues on the next line
            continue
        pending = ""
        yield from _split(tokens, text)


def _tokens(text: str) -> list[str]:
    """Shell words, with control operators (`;`, `|`, `&&`, `&`) and redirections as tokens of their own."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    return list(lex)


def _split(tokens: list[str], line: str) -> Iterator[Command]:
    current: list[str] = []
    skip = False
    for token in [*tokens, ";"]:
        if skip:
            skip = False
        elif token in ("|", "||", "&&", ";", "&", "(", ")"):
            if current:
                yield from _expand(current, line)
            current = []
        elif token in (">", ">>", "<", ">&", "<<"):
            skip = True  # a redirection and its target are not arguments
        else:
            current.append(token)


def _expand(argv: list[str], line: str) -> Iterator[Command]:
    """`VAR="$(inner)"` yields the inner commands, marked as assigning VAR; anything else as it is."""
    match = re.fullmatch(r"(\w+)=\$\((.*)\)", argv[0]) if len(argv) == 1 else None
    if match:
        inner = list(_split(_tokens(match.group(2)), line))
        for cmd in inner:
            yield Command(cmd.argv, line, assigns=match.group(1))
        return
    yield Command(tuple(argv), line)


def local_chart(argv: tuple[str, ...]) -> tuple[str, ...]:
    """A helm line with a published chart (`oci://.../reranker-operator --version V`) as the same chart of this
    repository (`charts/reranker-operator`), which is what that version was packaged from."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--version":
            skip = True
        elif token.startswith("oci://") and token.rsplit("/", 1)[-1] in ("reranker-operator", "reranker"):
            out.append(f"charts/{token.rsplit('/', 1)[-1]}")
        elif not token.startswith("--version="):
            out.append(token)
    return tuple(out)


def option(argv: tuple[str, ...], *names: str) -> list[str]:
    """Values of an option given as `--name value`, `--name=value` or `-n value`."""
    values = []
    for i, token in enumerate(argv):
        for name in names:
            if token == name and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif token.startswith(name + "=") and name.startswith("--"):
                values.append(token.split("=", 1)[1])
    return values


def positionals(argv: tuple[str, ...], with_value: tuple[str, ...]) -> list[str]:
    """Arguments that are not options (nor the values of the options in `with_value`)."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token.startswith("-"):
            skip = token in with_value
        else:
            out.append(token)
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's value coalescing: maps merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def helm_values(argv: tuple[str, ...]) -> dict[str, Any]:
    """The values of a `helm install/upgrade` line: -f files in order, then --set / --set-string."""
    values: dict[str, Any] = {}
    for path in option(argv, "-f", "--values"):
        values = deep_merge(values, helm.values_from_yaml((ROOT / path).read_text()))
    for i, token in enumerate(argv[:-1]):
        if token == "--set":
            values = deep_merge(values, helm.parse_set_string(argv[i + 1]))
        elif token == "--set-string":
            values = deep_merge(values, helm.parse_set_string_values(argv[i + 1]))
    return values


def render_chart(chart: str, values: dict[str, Any], *, release: str, namespace: str) -> list[dict]:
    """Objects of a chart rendered offline by the real Helm library."""
    with helm.Chart.load(str(ROOT / chart)) as loaded:
        files = loaded.render(values, name=release, namespace=namespace, is_install=True)
    return [
        doc
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@dataclass
class Reranker:
    """One RerankerDeployment the guide created, with what the operator renders for it."""

    name: str
    namespace: str
    spec: Any
    children: list[dict]
    origin: str

    def child(self, kind: str, name: str) -> dict | None:
        return next((c for c in self.children if c["kind"] == kind and c["metadata"]["name"] == name), None)

    def shape(self) -> dict[str, Any]:
        """What later steps can observe; alternatives that install the same reranker must agree on it."""
        settings = client_settings(self.name, self.namespace, self.spec)
        return {
            "children": sorted((c["kind"], c["metadata"]["name"]) for c in self.children),
            "clients": settings.model_dump(mode="json", by_alias=True),
        }


@dataclass
class Cluster:
    """What the guide's commands created so far, and the problems found walking them."""

    namespaces: set[str] = field(default_factory=set)
    secrets: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    watched: set[str] | None = None  # None: no operator yet; empty set: every namespace
    rerankers: dict[tuple[str, str], Reranker] = field(default_factory=dict)
    forwards: dict[int, tuple[Reranker, int]] = field(default_factory=dict)  # local port -> (reranker, port)
    variables: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # VAR -> Secret (ns, name, key)
    problems: list[str] = field(default_factory=list)
    first_reranker: Reranker | None = None

    def problem(self, cmd: Command, text: str) -> None:
        self.problems.append(f"{text}\n    in: {cmd.line.strip()}")

    # ---- the walk -----------------------------------------------------------------------------------------

    def run(self, cmd: Command) -> None:
        argv = cmd.argv
        if argv[0] == "kubectl":
            self._kubectl(cmd)
        elif argv[0] == "helm" and len(argv) > 1 and argv[1] in ("install", "upgrade"):
            self._helm_install(Command(local_chart(argv), cmd.line, cmd.assigns))
        elif argv[0] == "curl":
            self._curl(cmd)

    def _namespace_used(self, cmd: Command, namespace: str) -> None:
        if namespace not in self.namespaces:
            self.problem(cmd, f"namespace {namespace!r} is used before any step creates it")

    def _kubectl(self, cmd: Command) -> None:
        argv = cmd.argv
        namespace = (option(argv, "-n", "--namespace") or [None])[0]
        words = positionals(argv[1:], ("-n", "--namespace", "-o", "-f", "-l", "--from-literal", "--selector"))
        if words[:2] == ["create", "namespace"]:
            self.namespaces.add(words[2])
            return
        if namespace is not None:
            self._namespace_used(cmd, namespace)
        if words[:3] == ["create", "secret", "generic"]:
            keys = {lit.split("=", 1)[0] for lit in option(argv, "--from-literal")}
            self.secrets[(namespace or "default", words[3])] = keys
        elif words[:1] == ["apply"]:
            for path in option(argv, "-f", "--filename"):
                self._apply(cmd, path, namespace)
        elif words[:1] == ["get"] and len(words) >= 2:
            self._get(cmd, namespace or "default", words[1], words[2] if len(words) > 2 else None)
        elif words[:1] == ["port-forward"]:
            self._port_forward(cmd, namespace or "default", words[1:])
        for selector in option(argv, "-l", "--selector"):
            self._labels_used(cmd, namespace or "default", selector)

    def _apply(self, cmd: Command, path: str, namespace: str | None) -> None:
        resource = yaml.safe_load((ROOT / path).read_text())
        meta = resource["metadata"]
        target = meta.get("namespace") or namespace or "default"
        if namespace and meta.get("namespace") and namespace != meta["namespace"]:
            self.problem(cmd, f"{path} names namespace {meta['namespace']!r}; kubectl refuses -n {namespace}")
        self._namespace_used(cmd, target)
        self._add_reranker(cmd, meta["name"], target, resource["spec"], origin=path)

    def _helm_install(self, cmd: Command) -> None:
        argv = cmd.argv
        release, chart = positionals(
            argv[2:], ("-n", "--namespace", "-f", "--values", "--set", "--set-string")
        )[:2]
        # A published chart (oci://.../reranker-operator) is the chart of this repository at that version.
        chart = {"reranker-operator": OPERATOR_CHART, "reranker": RERANKER_CHART}.get(
            chart.rsplit("/", 1)[-1], chart
        )
        namespace = (option(argv, "-n", "--namespace") or ["default"])[0]
        if "--create-namespace" in argv:
            self.namespaces.add(namespace)
        else:
            self._namespace_used(cmd, namespace)
        values = helm_values(argv)
        if chart == OPERATOR_CHART:
            render_chart(chart, values, release=release, namespace=namespace)  # fails on a bad value
            self.watched = set(values.get("watchNamespaces") or ())
        elif chart == RERANKER_CHART:
            objects = render_chart(chart, values, release=release, namespace=namespace)
            [rrd] = [o for o in objects if o["kind"] == "RerankerDeployment"]
            meta = rrd["metadata"]
            self._add_reranker(cmd, meta["name"], meta["namespace"], rrd["spec"], origin=" ".join(argv[:4]))

    def _add_reranker(self, cmd: Command, name: str, namespace: str, raw_spec: dict, *, origin: str) -> None:
        if self.watched is None:
            self.problem(cmd, "a RerankerDeployment is created before the operator is installed")
        elif self.watched and namespace not in self.watched:
            self.problem(cmd, f"the operator does not watch namespace {namespace!r}")
        spec = load_spec(raw_spec)
        reranker = Reranker(name, namespace, spec, render_all(name, namespace, spec), origin)
        self._secrets_exist(cmd, reranker)
        known = self.rerankers.get((namespace, name))
        upgrade = cmd.argv[:2] == ("helm", "upgrade")
        if known is not None and not upgrade and known.shape() != reranker.shape():
            self.problem(
                cmd, f"{origin} and {known.origin} install {namespace}/{name} differently: later steps break"
            )
        if known is None or upgrade:
            self.rerankers[(namespace, name)] = reranker
        if self.first_reranker is None:
            self.first_reranker = reranker

    def _secrets_exist(self, cmd: Command, reranker: Reranker) -> None:
        """Every Secret a pod of the reranker mounts or reads must exist, with the key."""
        for child in reranker.children:
            pod = (child.get("spec") or {}).get("template", {}).get("spec") or {}
            for volume in pod.get("volumes") or ():
                secret = volume.get("secret")
                if secret:
                    for item in secret.get("items") or [{"key": None}]:
                        self._secret_used(cmd, reranker.namespace, secret["secretName"], item["key"])
            for container in [*(pod.get("initContainers") or ()), *(pod.get("containers") or ())]:
                for env in container.get("env") or ():
                    ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                    if ref:
                        self._secret_used(cmd, reranker.namespace, ref["name"], ref["key"])

    def _secret_used(self, cmd: Command, namespace: str, name: str, key: str | None) -> None:
        keys = self.secrets.get((namespace, name))
        if keys is None:
            self.problem(cmd, f"Secret {namespace}/{name} is needed but no earlier step creates it")
        elif key is not None and key not in keys:
            self.problem(cmd, f"Secret {namespace}/{name} has keys {sorted(keys)}, not {key!r}")

    def _get(self, cmd: Command, namespace: str, kind: str, name: str | None) -> None:
        kind = kind.split("/")[0]
        if kind in ("rrd", "rerankerdeployment", "rerankerdeployments"):
            if self.watched is not None and self.watched and namespace not in self.watched:
                self.problem(cmd, f"the operator does not watch namespace {namespace!r}")
            if name is not None and (namespace, name) not in self.rerankers:
                self.problem(cmd, f"no RerankerDeployment {namespace}/{name} was created")
        elif kind in ("configmap", "cm", "service", "svc", "hpa", "deployment", "deploy"):
            wanted = {"configmap": "ConfigMap", "cm": "ConfigMap", "service": "Service", "svc": "Service"}
            wanted |= {"hpa": "HorizontalPodAutoscaler", "deployment": "Deployment", "deploy": "Deployment"}
            if name is not None and not any(
                r.namespace == namespace and r.child(wanted[kind], name) for r in self.rerankers.values()
            ):
                self.problem(cmd, f"no {wanted[kind]} {namespace}/{name} is rendered by any earlier step")
        elif kind == "secret" and name is not None:
            jsonpath = " ".join(option(cmd.argv, "-o", "--output"))
            key = re.search(r"\{\.data\.([^}]+)\}", jsonpath)
            self._secret_used(cmd, namespace, name, key.group(1) if key else None)
            if cmd.assigns and key:
                self.variables[cmd.assigns] = (namespace, name, key.group(1))

    def _port_forward(self, cmd: Command, namespace: str, words: list[str]) -> None:
        target, ports = words[0], words[1]
        local, _, remote = ports.partition(":")
        remote = remote or local
        kind, _, name = target.partition("/")
        reranker = self.rerankers.get((namespace, name))
        service = reranker.child("Service", name) if reranker else None
        if kind not in ("svc", "service") or service is None:
            self.problem(cmd, f"no Service {namespace}/{name} is rendered by any earlier step")
            return
        if int(remote) not in [p["port"] for p in service["spec"]["ports"]]:
            self.problem(cmd, f"Service {namespace}/{name} has no port {remote}")
        self.forwards[int(local)] = (reranker, int(remote))

    def _curl(self, cmd: Command) -> None:
        from reranker_server.http import MODELS_PATHS, RERANK_PATHS

        urls = [t for t in cmd.argv if re.match(r"^(https?://)?(localhost|127\.0\.0\.1):\d+", t)]
        if not urls:
            return
        match = re.match(r"^(?:https?://)?[^:/]+:(\d+)(/[^?]*)?", urls[0])
        assert match is not None
        port, path = int(match.group(1)), match.group(2) or "/"
        if port not in self.forwards:
            self.problem(cmd, f"nothing forwards localhost:{port} (port-forward first)")
            return
        reranker, _ = self.forwards[port]
        if path not in (*MODELS_PATHS, *RERANK_PATHS):
            self.problem(cmd, f"the server has no route {path}")
        headers = option(cmd.argv, "-H", "--header")
        auth = next((h for h in headers if h.lower().startswith("authorization:")), None)
        ref = reranker.spec.auth.api_key_secret_ref if reranker.spec.auth else None
        if ref is not None:
            variable = re.search(r"\$\{?(\w+)\}?", auth or "")
            source = self.variables.get(variable.group(1)) if variable else None
            if source != (reranker.namespace, ref.name, ref.key):
                self.problem(
                    cmd,
                    f"{reranker.name} requires the key in Secret {ref.name}/{ref.key}: send "
                    "'Authorization: Bearer $KEY' with KEY read from that Secret (got "
                    f"{auth or 'no Authorization header'})",
                )
        body = option(cmd.argv, "-d", "--data")
        if body:
            sent = json.loads(body[0]).get("model")
            served = client_settings(reranker.name, reranker.namespace, reranker.spec).model
            if sent is not None and sent != served:
                self.problem(cmd, f"the request names model {sent!r}; the server serves {served!r}")

    def _labels_used(self, cmd: Command, namespace: str, selector: str) -> None:
        wanted = dict(term.split("=", 1) for term in selector.split(",") if "=" in term)
        for reranker in self.rerankers.values():
            for child in reranker.children:
                labels = ((child.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels")
                if reranker.namespace == namespace and labels and wanted.items() <= labels.items():
                    return
        self.problem(cmd, f"no pod in {namespace} carries the labels {selector}")


def walk(markdown: str, cluster: Cluster | None = None) -> Cluster:
    """Run every command of `markdown` in order; the returned cluster lists the problems found."""
    cluster = cluster or Cluster()
    for cmd in commands(markdown):
        cluster.run(cmd)
    return cluster
