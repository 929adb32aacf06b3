"""Readers for the deployment files, shared by the infra tests.

Docker is not needed (nor used): docker-compose.yml is read with PyYAML and interpolated
here the way ``docker compose`` does it; Dockerfiles are split into instructions and
stages; ``.dockerignore`` and ``.env.example`` are parsed by their documented rules, as far
as these files use them.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from qc_worker.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKER_DIR = ROOT / "infra" / "docker"
DOCKERFILES = {
    "cuda": DOCKER_DIR / "Dockerfile.cuda",
    "cpu": DOCKER_DIR / "Dockerfile.cpu",
}

# --- Settings ----------------------------------------------------------------------------


def settings_env_problem(name: str) -> str | None:
    """Why ``name`` (``QC_...``) sets no Settings field, or None when it does.

    ``QC_FRAMES__INTERVAL_S`` goes through the nested model of ``frames`` to its field
    ``interval_s``; a ``__`` into a field that is not a model names nothing.
    """
    if not name.startswith(ENV_PREFIX):
        return f"{name} does not start with {ENV_PREFIX}"
    parts = name[len(ENV_PREFIX) :].lower().split("__")
    fields: dict[str, Any] = Settings.model_fields
    where = "Settings"
    for i, part in enumerate(parts):
        if part not in fields:
            return f"{name}: {where} has no field {part!r}"
        annotation = fields[part].annotation
        if i + 1 < len(parts):
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return f"{name}: {where}.{part} is not a nested section"
            fields = annotation.model_fields
            where = annotation.__name__
    return None


QC_NAME = re.compile(r"\bQC_[A-Z0-9_]*[A-Z0-9]")


# --- .env files ------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^(#\s*)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass
class EnvFile:
    """``KEY=VALUE`` lines; ``# KEY=VALUE`` lines are documented defaults, not set."""

    values: dict[str, str] = field(default_factory=dict)
    commented: dict[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def mentioned(self) -> set[str]:
        return set(self.values) | set(self.commented)


def read_env_file(path: Path) -> EnvFile:
    env = EnvFile(text=path.read_text(encoding="utf-8"))
    for raw in env.text.splitlines():
        m = _ENV_LINE.match(raw.strip())
        if not m:
            continue
        comment, key, value = m.groups()
        (env.commented if comment else env.values)[key] = value.strip()
    return env


# --- compose interpolation --------------------------------------------------------------------

_VAR_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")


class MissingVariable(ValueError):
    """A ``${NAME:?message}`` (or ``?``) whose variable is unset."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """``text`` with compose's ``$VAR`` / ``${VAR...}`` forms expanded from ``env``.

    Supports what the Compose reference lists: ``${VAR}``, ``:-``/``-`` defaults, ``:?``/``?``
    required values, ``:+``/``+`` alternatives, nesting inside them, and ``$$`` for a
    literal ``$``. An unset plain variable becomes empty, as in compose.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$":
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 1)
            out.append(_expand(text[i + 2 : end], env))
            i = end + 1
        elif (m := _VAR_NAME.match(text, i + 1)) is not None:
            out.append(env.get(m.group(), ""))
            i = m.end()
        else:
            out.append("$")
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unclosed ${{ in {text!r}")


def _expand(body: str, env: dict[str, str]) -> str:
    m = _VAR_NAME.match(body)
    if m is None:
        raise ValueError(f"bad variable expression ${{{body}}}")
    name, rest = m.group(), body[m.end() :]
    value = env.get(name)
    if not rest:
        return value or ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = rest[len(op) :]
            break
    else:
        raise ValueError(f"unsupported variable expression ${{{body}}}")
    present = bool(value) if op.startswith(":") else value is not None
    if op.endswith("-"):
        return value if present else interpolate(arg, env)  # type: ignore[return-value]
    if op.endswith("?"):
        if not present:
            raise MissingVariable(f"{name}: {interpolate(arg, env)}")
        return value  # type: ignore[return-value]
    return interpolate(arg, env) if present else ""


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Every string value (not key) in a parsed compose file, interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


@dataclass(frozen=True)
class VariableUse:
    name: str
    has_default: bool  # ${NAME:-x} / ${NAME-x} / ${NAME:+x}: works when unset


def variable_uses(text: str) -> list[VariableUse]:
    """Every variable a compose file interpolates (``$$`` escapes skipped), nested included."""
    uses: list[VariableUse] = []
    text = text.replace("$$", "")
    for m in re.finditer(r"\$\{([_a-zA-Z][_a-zA-Z0-9]*)(:?[-?+])?|\$([_a-zA-Z][_a-zA-Z0-9]*)", text):
        name = m.group(1) or m.group(3)
        op = m.group(2) or ""
        uses.append(VariableUse(name, has_default=op.endswith(("-", "+"))))
    return uses


# --- compose ----------------------------------------------------------------------------------


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment:`` as a dict (it may be a mapping or a list of K=V)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def env_files_of(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file") or []
    if isinstance(files, (str, dict)):
        files = [files]
    return [f["path"] if isinstance(f, dict) else f for f in files]


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def is_qc_service(service: dict[str, Any]) -> bool:
    """A service that runs our image (built here) and a ``qc`` command."""
    return "build" in service and command_of(service)[:1] == ["qc"]


def build_paths(service: dict[str, Any]) -> tuple[Path, Path]:
    """(context, Dockerfile) of a service's ``build:``, relative to the compose file."""
    build = service["build"]
    if isinstance(build, str):
        build = {"context": build}
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    return context, (context / build.get("dockerfile", "Dockerfile")).resolve()


# --- Dockerfiles --------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def read_dockerfile(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, ``\\`` continuations joined."""
    out: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, f"{path}: the last instruction ends with a continuation"
    return out


def stages_of(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(ins)
    return stages


def flags_and_words(args: str) -> tuple[dict[str, str], list[str]]:
    """``--from=builder --chmod=0755 a b`` -> ({"from": "builder", "chmod": "0755"}, [a, b])."""
    if args.startswith("["):
        import json

        return {}, json.loads(args)
    flags: dict[str, str] = {}
    words: list[str] = []
    for word in args.split():
        if word.startswith("--") and not words:
            key, _, value = word[2:].partition("=")
            flags[key] = value
        else:
            words.append(word)
    return flags, words


# --- .dockerignore --------------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def is_dockerignored(relpath: str, patterns: list[str]) -> bool:
    """Whether the build context leaves out ``relpath`` (the last matching rule wins).

    A pattern matches a path or any folder above it; ``**`` matches any number of folders.
    """
    parts = relpath.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(_match(c, pat) for c in candidates):
            excluded = not negate
    return excluded


def _match(path: str, pattern: str) -> bool:
    if fnmatch.fnmatchcase(path, pattern):
        return True
    if pattern.startswith("**/"):
        rest = pattern[3:]
        segments = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(segments[i:]), rest) for i in range(len(segments)))
    return False


# --- torch pins ------------------------------------------------------------------------------------

_PIN = re.compile(r"\b(torch|torchvision)==([0-9][0-9A-Za-z.+]*)")


def pins_in(text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, version in _PIN.findall(text):
        found.setdefault(name, set()).add(version)
    return found


def pyproject_pins() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins: dict[str, str] = {}
    for dep in data["project"]["dependencies"]:
        m = re.fullmatch(r"(torch|torchvision)==(\S+)", dep.replace(" ", ""))
        if m:
            pins[m.group(1)] = m.group(2)
    return pins


def makefile_pins() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith("TORCH_PINS"))
    return {name: versions.pop() for name, versions in pins_in(line).items()}


# --- the qc CLI ----------------------------------------------------------------------------------


def qc_command_problem(argv: list[str]) -> str | None:
    """Why ``argv`` (``["qc", "worker", "--concurrency", "1"]``) is not a valid command of
    the typer app ``qc_worker.cli:app``, or None when it parses.

    The words are walked through the app's groups (sub-typers such as ``db``) to a command,
    whose options and arguments are then parsed without running anything. Duck-typed,
    because typer may build on click or on its own vendored copy of it.
    """
    from typer.main import get_command

    from qc_worker.cli import app

    if argv[:1] != ["qc"]:
        return f"{argv!r} does not start with qc"
    command = get_command(app)
    path = ["qc"]
    args = list(argv[1:])
    while hasattr(command, "get_command") and hasattr(command, "list_commands"):
        ctx = command.context_class(command, info_name=" ".join(path))
        names = list(command.list_commands(ctx))
        if not args:
            return f"`{' '.join(path)}` is a group; it needs one of {names}"
        sub = command.get_command(ctx, args[0])
        if sub is None:
            return f"`{' '.join(path)} {args[0]}` is not a command of qc_worker.cli:app (it has {names})"
        command, path = sub, [*path, args.pop(0)]
    try:
        command.make_context(" ".join(path), args)
    except _cli_exceptions() as exc:
        if type(exc).__name__ == "Exit" and getattr(exc, "exit_code", 0) == 0:
            return None  # --help / --version
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        return f"`{' '.join(argv)}`: {type(exc).__name__}: {message}"
    return None


def _cli_exceptions() -> tuple[type[BaseException], ...]:
    """The usage errors (and Exit) of click and of typer's vendored click, where present."""
    import importlib

    found: list[type[BaseException]] = []
    for module in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in ("ClickException", "Exit", "Abort"):
            cls = getattr(mod, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)
