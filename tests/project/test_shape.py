"""The code's shape: no import circles in edge/ or convert/ (the rooms' order: test_layers.py),
small modules and functions (tests may be longer, up to MAX_TEST_MODULE_LINES)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.codegraph import cycles, import_graph, modules

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_no_import_circle_in_edge_or_convert():
    assert cycles(import_graph(ROOT)) == []


def test_the_circle_finder_finds_a_lazy_circle(tmp_path: Path):
    (tmp_path / "edge" / "service").mkdir(parents=True)
    (tmp_path / "convert").mkdir()
    (tmp_path / "edge" / "__init__.py").write_text("")
    (tmp_path / "edge" / "service" / "__init__.py").write_text("")
    (tmp_path / "convert" / "__init__.py").write_text("")
    (tmp_path / "edge" / "service" / "a.py").write_text("from edge.service.b import thing\n")
    (tmp_path / "edge" / "service" / "b.py").write_text("def thing():\n    from . import a\n")
    assert cycles(import_graph(tmp_path)) == [["edge.service.a", "edge.service.b"]]


def test_no_module_or_function_is_too_long():
    long_modules, long_functions = [], []
    for name, path in modules(ROOT).items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}.{node.name}: {length} lines")
    assert long_modules == [] and long_functions == []


def test_no_test_module_imports_another():
    """Shared helpers live in tests/support/ (and the long runs in tests/scenarios/), never in a test module."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            found += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if any(p.startswith("test_") for p in n.split("."))
            ]
    assert found == []


TOPIC_CALLS = {"topic", "publish_json", "publish_bytes", "publish", "subscribe", "will_set", "under"}


def topic_literals(root: Path) -> list[str]:
    """Topics written as strings outside edge/wire/topics.py: a literal handed to a publish, subscribe or
    topic call, or a string ending in one of our topics (``"/decision"``, ``"smartbin/+/status"``)."""
    from edge.wire.topics import Topic

    suffixes = tuple(f"/{t.value}" for t in Topic)
    found = set()
    for name, path in modules(root).items():
        if name == "edge.wire.topics":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and node.args:
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                literal = isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
                if (
                    literal
                    and func in TOPIC_CALLS
                    or func == "endswith"
                    and ast.unparse(node.args[0])[1:-1] in suffixes
                ):
                    found.add(f"{name}:{node.lineno}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "\n" not in node.value:
                value = node.value  # an HTTP path such as "/metrics" is not a topic: a topic has levels before
                if (
                    value.endswith(suffixes)
                    and value not in suffixes
                    or value.startswith("smartbin/")
                    and value != "smartbin/"
                ):
                    found.add(f"{name}:{node.lineno}")
    return sorted(found)


def test_topics_are_named_in_one_place():
    assert topic_literals(ROOT) == []


def test_the_topic_check_finds_a_literal(tmp_path: Path):
    (tmp_path / "edge").mkdir()
    (tmp_path / "convert").mkdir()
    (tmp_path / "edge" / "a.py").write_text('client.subscribe(f"{base}/decision")\nok = t.endswith("/status")\n')
    assert topic_literals(tmp_path) == ["edge.a:1", "edge.a:2"]


def handed_out(statement: ast.stmt) -> list[ast.Attribute]:
    """``a.b.c`` references that outlive the statement: inside a lambda, or a bound method passed as an
    argument (not called)."""
    refs = []
    for node in ast.walk(statement):
        if isinstance(node, ast.Lambda):
            refs += [n for n in ast.walk(node.body) if isinstance(n, ast.Attribute)]
        elif isinstance(node, ast.Call):
            refs += [a for a in [*node.args, *(k.value for k in node.keywords)] if isinstance(a, ast.Attribute)]
    return [r for r in refs if isinstance(r.value, ast.Attribute)]


def forward_references(root: Path) -> list[str]:
    """Constructors that hand out ``self.X`` (in a lambda or as ``self.X.method``) before ``self.X`` is
    made: a part built so calls back into its owner's later parts. Methods of the class are its own."""
    found = []
    for name, path in modules(root).items():
        for cls in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(cls, ast.ClassDef):
                continue
            own = {f.name for f in cls.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
            init = next((f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
            made: dict[str, int] = {}  # attribute -> the line that first sets it
            for node in ast.walk(init) if init else []:
                if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    made[node.attr] = min(made.get(node.attr, node.lineno), node.lineno)
            for ref in [r for statement in (init.body if init else []) for r in handed_out(statement)]:
                inner = ref.value
                if isinstance(inner, ast.Attribute) and ast.unparse(inner.value) == "self" and inner.attr not in own:
                    if made.get(inner.attr, ref.lineno + 1) > ref.lineno:
                        found.append(f"{name}:{ref.lineno} self.{inner.attr}")
    return sorted(set(found))


def test_parts_are_built_before_anything_refers_to_them():
    assert forward_references(ROOT) == []


def test_the_construction_check_finds_a_forward_reference(tmp_path: Path):
    (tmp_path / "edge").mkdir()
    (tmp_path / "convert").mkdir()
    code = (
        "class D:\n"
        "    def __init__(self):\n"
        "        self.a = A(lambda p: self.b.send(p))\n"
        "        self.b = B(self.a.submit, self.view)\n"
        "    def view(self):\n"
        "        return 1\n"
    )
    (tmp_path / "edge" / "d.py").write_text(code)
    assert forward_references(tmp_path) == ["edge.d:3 self.b"]


CONTRACT = {
    "edge.wire.payloads",
    "edge.wire.command_spec",
    "edge.wire.topics",
    "edge.wire.message",
    "edge.wire.shadow",
    "edge.wire.fleet",
}


def payload_fields() -> set[str]:
    """Every field name of the wire contract's messages (edge/wire/payloads.py), nested ones too."""
    from pydantic import BaseModel

    from edge.wire import fleet, payloads, shadow

    found = set()
    for module in (payloads, shadow, fleet):
        classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, BaseModel)]
        found |= {name for c in classes if c.__module__ == module.__name__ for name in c.model_fields}
    return found


def field_reads(root: Path) -> list[str]:
    """Fields of a message read by name outside the contract's modules: ``x["bin"]`` or ``x.get("bin")``
    where ``x`` is ``json.loads(<a message's payload>)`` or a name bound to one in the same function."""
    fields = payload_fields()

    def parsed(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "loads"
            and bool(node.args)
            and "payload" in ast.unparse(node.args[0])
        )

    found = set()
    for name, path in modules(root).items():
        if name in CONTRACT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for scope in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda))]:
            bound = {
                t.id
                for n in ast.walk(scope)
                if isinstance(n, ast.Assign) and parsed(n.value)
                for t in n.targets
                if isinstance(t, ast.Name)
            }
            for node in ast.walk(scope):
                if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
                    source, key = node.value, node.slice
                elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get" and node.args:
                    source, key = node.func.value, node.args[0]
                else:
                    continue
                from_json = parsed(source) or isinstance(source, ast.Name) and source.id in bound
                if from_json and isinstance(key, ast.Constant) and key.value in fields:
                    found.add(f"{name}:{node.lineno} {key.value}")
    return sorted(found)


def test_messages_are_read_through_the_contract():
    assert field_reads(ROOT) == []


def test_the_field_check_finds_a_read_by_name(tmp_path: Path):
    (tmp_path / "edge").mkdir()
    (tmp_path / "convert").mkdir()
    code = (
        "def on(message):\n"
        "    d = json.loads(message.payload)\n"
        "    ok = {'x': 1}['event_id'], config['bin']\n"
        "    return d['event_id'], json.loads(message.payload).get('bin'), d['not_a_field']\n"
    )
    (tmp_path / "edge" / "m.py").write_text(code)
    assert field_reads(tmp_path) == ["edge.m:4 bin", "edge.m:4 event_id"]


# Signals between two functions of one module, not errors anyone sees: they may stay plain exceptions.
CONTROL_FLOW = {"edge.fleet.rollout.Stopped", "convert.data.fetch.Refused"}


def test_every_error_derives_from_the_projects_base_error():
    """An error class is a SmartbinError (the CLI prints it as one line, callers catch one base), whatever
    module it lives in; a plain ``Exception`` base is allowed only for the control-flow signals above."""
    plain = []
    for name, path in modules(ROOT).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                if (
                    bases & {"Exception", "ValueError", "RuntimeError", "OSError"}
                    and f"{name}.{node.name}" not in CONTROL_FLOW
                ):
                    plain.append(f"{name}.{node.name}")
    assert plain == ["edge.errors.SmartbinError"]


def test_how_a_topic_is_sent_is_said_once_on_the_topic():
    """QoS and retain come from the topic's own definition (edge/wire/topics.py DELIVERY): no publish or
    subscribe of one of our topics writes a QoS or retain flag of its own."""
    import re

    written = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in modules(ROOT).values()
        if path.name != "topics.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "Topic." in line and re.search(r"\b(qos=\d|retain=(True|False))", line)
    ]
    assert written == []


MAX_TEST_MODULE_LINES = 500


def test_no_test_module_is_too_long():
    """Tests may be longer than the code, not without end: a module past this splits by what it checks."""
    long = [
        f"{path.relative_to(ROOT)}: {path.read_text(encoding='utf-8').count(chr(10))} lines"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.read_text(encoding="utf-8").count("\n") > MAX_TEST_MODULE_LINES
    ]
    assert long == []
