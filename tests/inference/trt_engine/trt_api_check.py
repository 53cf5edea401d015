"""Check the TensorRT names our code uses against ``tensorrt-stubs`` (no TensorRT needed).

Two halves:

- :func:`load_stub_api` parses the stub ``.pyi`` files tolerantly.  They are generated and
  contain a few lines Python rejects (e.g. ``def add_scale_nd(..., shift: Weights = None, ...,
  channel_axis: int)``: a non-default argument after defaults); such a ``def`` line is replaced
  by ``def name(*args, **kwargs) -> <same return annotation>:`` and any other offending line by
  ``pass``, then parsing is retried.  The result maps class -> members (methods, properties,
  annotated attributes, enum values, nested classes, ``:ivar`` docstring fields), with bases.
- :func:`collect_uses` walks our source by AST: every attribute chain on the ``trt`` alias
  (``trt.BuilderFlag.FP16``), and method/attribute uses on objects whose TensorRT class it can
  infer (``builder = trt.Builder(...)`` -> ``Builder``; ``builder.create_network()`` -> the
  stub's return annotation ``INetworkDefinition``; parameters and locals annotated with
  ``"trt.X"``; ``self._x = ...`` attributes across a class).  Calls it cannot type (stub
  return annotation ``...``) are covered by the explicit (class, member) table in the test.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

MODULE = "<module>"


@dataclass
class StubClass:
    name: str
    members: dict[str, str | None] = field(default_factory=dict)  # name -> type (or None)
    nested: dict[str, "StubClass"] = field(default_factory=dict)
    bases: list[str] = field(default_factory=list)


@dataclass
class StubAPI:
    version: str
    module: set[str]
    classes: dict[str, StubClass]
    repaired_lines: list[int]

    def lookup_class(self, path: tuple[str, ...]) -> StubClass | None:
        cls = self.classes.get(path[0])
        for part in path[1:]:
            if cls is None:
                return None
            cls = cls.nested.get(part) or self._inherited_nested(cls, part)
        return cls

    def _inherited_nested(self, cls: StubClass, part: str) -> StubClass | None:
        for b in cls.bases:
            base = self.classes.get(b)
            if base is not None:
                hit = base.nested.get(part) or self._inherited_nested(base, part)
                if hit is not None:
                    return hit
        return None

    def member(self, cls: StubClass, name: str, _seen=None) -> tuple[bool, str | None]:
        """(exists, type name) of ``cls.name``, searching base classes."""
        if name in cls.members:
            return True, cls.members[name]
        if name in cls.nested:
            return True, None
        seen = _seen or set()
        for b in cls.bases:
            base = self.classes.get(b)
            if base is not None and b not in seen:
                seen.add(b)
                ok, t = self.member(base, name, seen)
                if ok:
                    return ok, t
        return False, None


_DEF = re.compile(r"^(\s*)def\s+(\w+)\s*\(.*?\)\s*(->\s*.+?)?\s*:\s*$")
_IVAR = re.compile(r":ivar\s+(\w+):")


def parse_tolerant(src: str, max_repairs: int = 200) -> tuple[ast.Module, list[int]]:
    """``ast.parse`` after repairing the lines that raise SyntaxError (see module doc)."""
    lines = src.splitlines()
    repaired: list[int] = []
    for _ in range(max_repairs):
        try:
            return ast.parse("\n".join(lines)), repaired
        except SyntaxError as exc:
            i = (exc.lineno or 1) - 1
            m = _DEF.match(lines[i])
            if m:
                ret = f" {m.group(3)}" if m.group(3) else ""
                lines[i] = f"{m.group(1)}def {m.group(2)}(*args, **kwargs){ret}:"
            else:
                indent = re.match(r"\s*", lines[i]).group(0)
                lines[i] = f"{indent}pass"
            if i + 1 in repaired:
                raise  # the repair did not help: give up loudly
            repaired.append(i + 1)
    raise RuntimeError("too many syntax errors in the stubs")


def _type_name(node: ast.AST | None) -> str | None:
    """A bare class name from an annotation (``ICudaEngine``, ``'ICudaEngine'``), else None."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if node.value.isidentifier() else None
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr  # tensorrt.ICudaEngine
    if isinstance(node, ast.Subscript):  # typing.ClassVar[X] -> X
        return _type_name(node.slice)
    return None


def _class_from_ast(node: ast.ClassDef) -> StubClass:
    cls = StubClass(node.name, bases=[b for b in map(_type_name, node.bases) if b])
    doc = ast.get_docstring(node) or ""
    for name in _IVAR.findall(doc):
        cls.members.setdefault(name, None)
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            cls.members[item.name] = _type_name(item.returns)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            cls.members[item.target.id] = _type_name(item.annotation)
        elif isinstance(item, ast.Assign):
            for t in item.targets:
                if isinstance(t, ast.Name):
                    cls.members[t.id] = None
        elif isinstance(item, ast.ClassDef):
            cls.nested[item.name] = _class_from_ast(item)
    return cls


def load_stub_api(stub_root: Path) -> StubAPI:
    """Parse ``tensorrt/__init__.pyi`` and ``tensorrt_bindings/*.pyi`` under ``stub_root``."""
    stub_root = Path(stub_root)
    pkg = stub_root / "tensorrt" / "__init__.pyi"
    bindings = sorted((stub_root / "tensorrt_bindings").glob("*.pyi"))
    if not pkg.is_file() or not bindings:
        raise FileNotFoundError(f"no tensorrt stubs under {stub_root}")
    module: set[str] = set()
    classes: dict[str, StubClass] = {}
    repaired: list[int] = []
    version = "?"
    for path in [pkg, *bindings]:
        tree, fixed = parse_tolerant(path.read_text(encoding="utf-8"))
        repaired += fixed
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, _class_from_ast(node))
            if path != pkg:
                continue  # what ``import tensorrt`` exposes is decided by its __init__.pyi
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                module.add(node.name)
            elif isinstance(node, ast.ImportFrom):
                module.update(a.asname or a.name for a in node.names)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                module.add(node.target.id)
                if node.target.id == "__version__" and isinstance(node.value, ast.Constant):
                    version = str(node.value.value)
            elif isinstance(node, ast.Assign):
                module.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return StubAPI(version, module, classes, repaired)


@dataclass(frozen=True)
class Use:
    """One TensorRT name our code uses: ``owner`` is MODULE or a class path like
    ``ILogger.Severity``."""

    owner: str
    member: str
    line: int

    def __str__(self) -> str:
        return f"line {self.line}: {'trt' if self.owner == MODULE else self.owner}.{self.member}"


# Inferred expression types: ("module",), ("class", path-tuple), ("inst", path-tuple).
class _Inferer:
    def __init__(self, api: StubAPI, alias: str):
        self.api, self.alias = api, alias
        self.env: dict[tuple[str, str], tuple] = {}  # (scope, name) -> type
        self.uses: list[Use] = []
        self.record = False

    def typeof(self, node: ast.AST, scope: str):
        if isinstance(node, ast.Name):
            if node.id == self.alias:
                return ("module",)
            return self.env.get((scope, node.id))
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                return self.env.get(("self", node.attr))
            base = self.typeof(node.value, scope)
            return self._member(base, node.attr, node.lineno)
        if isinstance(node, ast.Call):
            # A constructor call gives an instance; a method call gives its annotated result
            # (which _member already returns for the method name).
            t = self.typeof(node.func, scope)
            return ("inst", t[1]) if t else None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self._annotation(node.value, scope, node.lineno)
        return None

    def _annotation(self, text: str, scope: str, line: int = 0):
        m = re.fullmatch(rf"{re.escape(self.alias)}\.([\w.]+)(\s*\|\s*None)?", text.strip())
        if not m:
            return None
        try:
            expr = ast.parse(f"{self.alias}.{m.group(1)}", mode="eval").body
        except SyntaxError:
            return None
        for sub in ast.walk(expr):  # report the annotation's own line
            sub.lineno = line
        t = self.typeof(expr, scope)
        return ("inst", t[1]) if t and t[0] == "class" else None

    def _use(self, owner: str, member: str, line: int) -> None:
        if self.record:
            self.uses.append(Use(owner, member, line))

    def _member(self, base, attr: str, line: int):
        if base is None:
            return None
        if base[0] == "module":
            self._use(MODULE, attr, line)
            return ("class", (attr,)) if attr in self.api.classes else None
        path = base[1]
        self._use(".".join(path), attr, line)
        cls = self.api.lookup_class(path)
        if cls is None:
            return None
        if base[0] == "class" and self.api.lookup_class(path + (attr,)) is not None:
            return ("class", path + (attr,))
        ok, tname = self.api.member(cls, attr)
        # A method's return annotation, a property's or enum value's type.
        return ("inst", (tname,)) if ok and tname in self.api.classes else None

    # -- scopes ----------------------------------------------------------------------------
    def bind_function(self, fn: ast.FunctionDef, scope: str) -> None:
        args = fn.args
        for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            if a.annotation is not None:
                t = self._annotation_node(a.annotation, scope)
                if t:
                    self.env[(scope, a.arg)] = t
        for node in ast.walk(fn):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                t = self._annotation_node(node.annotation, scope)
                if t:
                    self.env[(scope, node.target.id)] = t
            elif isinstance(node, ast.Assign):
                t = self.typeof(node.value, scope)
                if t and t[0] in ("inst", "class"):  # sev = trt.ILogger.Severity too
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            self.env[(scope, target.id)] = t
                        elif (isinstance(target, ast.Attribute)
                              and isinstance(target.value, ast.Name)
                              and target.value.id == "self"):
                            self.env[("self", target.attr)] = t

    def _annotation_node(self, node: ast.AST, scope: str):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return self._annotation(node.value, scope, node.lineno)
        return None


def collect_uses(source: str, api: StubAPI, alias: str = "trt") -> list[Use]:
    """Every TensorRT name the source uses (see module doc), with line numbers."""
    tree = ast.parse(source)
    inf = _Inferer(api, alias)
    functions = [(n, f"{n.name}@{n.lineno}") for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for _ in range(6):  # fixpoint: self attributes flow between methods
        before = dict(inf.env)
        for fn, scope in functions:
            inf.bind_function(fn, scope)
        if inf.env == before:
            break
    inf.record = True
    scope_of: dict[int, str] = {}
    for fn, scope in functions:  # outer functions come first, so the innermost scope wins
        for node in ast.walk(fn):
            scope_of[id(node)] = scope
    _record_attributes(tree, inf, scope_of)
    return sorted(set(inf.uses), key=lambda u: (u.line, u.owner, u.member))


def _record_attributes(tree: ast.Module, inf: _Inferer, scope_of: dict[int, str]) -> None:
    # Only outermost attribute chains are typed (typeof recurses into inner links), plus
    # string annotations that name trt classes.
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            inner.add(id(node.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            inner.add(id(node.func))
    for node in ast.walk(tree):
        scope = scope_of.get(id(node), MODULE)
        if isinstance(node, (ast.Attribute, ast.Call)) and id(node) not in inner:
            inf.typeof(node, scope)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if re.fullmatch(rf"{re.escape(inf.alias)}\.[\w.]+(\s*\|\s*None)?", node.value):
                inf._annotation(node.value, scope, node.lineno)


def check_uses(uses: list[Use], api: StubAPI) -> list[str]:
    """Problems: each use that names something the stubs do not have."""
    problems = []
    for u in uses:
        if u.owner == MODULE:
            if u.member not in api.module:
                problems.append(f"{u}: tensorrt has no attribute {u.member!r}")
            continue
        cls = api.lookup_class(tuple(u.owner.split(".")))
        if cls is None:
            problems.append(f"{u}: tensorrt has no class {u.owner!r}")
        elif not api.member(cls, u.member)[0]:
            problems.append(f"{u}: {u.owner} has no member {u.member!r}")
    return problems


def check_table(table: list[tuple[str, str]], api: StubAPI) -> list[str]:
    """Problems with an explicit (class, member) table."""
    problems = []
    for owner, member in table:
        cls = api.lookup_class(tuple(owner.split(".")))
        if cls is None:
            problems.append(f"table: tensorrt has no class {owner!r}")
        elif not api.member(cls, member)[0]:
            problems.append(f"table: {owner} has no member {member!r}")
    return problems
