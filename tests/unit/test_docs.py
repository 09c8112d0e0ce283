"""docs/ says what the code does: checked where a machine can check it cheaply.

- every entry type the code appends has a section in docs/entries.md, and every
  section is a type the code appends; each example is valid JSON of its section's
  type, and names only fields its section describes;
- the files.tsv columns and bag-info keys in docs/bag.md are the verifier's;
- the worked example in docs/ledger.md is recomputed from tests/vectors/data with
  hashlib, PyNaCl and rfc8785 directly (not our ledger code), and our code signs the
  example entry to the same bytes.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
from pathlib import Path

import nacl.bindings
import rfc8785

from ledger.entry import make_entry
from ledger.note import Signer
from verify.bag import FILES_TSV_HEAD, SIGNED_INFO

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
VECTORS = REPO / "tests" / "vectors" / "data"
PACKAGES = ("custody", "ingest", "archive", "retention", "ledger", "verify", "hub", "web")
TYPE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")

# Call sites that append an entry whose type is a variable, and the types each can
# write. A new such site fails the test until it is listed here (and documented).
DYNAMIC_TYPES = {
    ("ingest/pipeline.py", "kind"): {"ingest", "sighting"},
    ("retention/sweep.py", "ty"): set(),  # Sweeper._record: its callers pass constants
}
ENVELOPE = {"v", "type", "time", "station", "sig"}


def _const_str(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def appended_types() -> tuple[set[str], set[tuple[str, str]]]:
    """Entry types the code appends, and the (file, variable) of variable-typed appends.

    An append is a call ``X.append(TYPE, payload, ...)`` or ``X._record(TYPE, payload)``
    (two or more arguments: a list's append takes one), or ``append_entries`` /
    ``sign_entries`` / a review site source's ``record`` over ``(TYPE, payload)``
    tuples."""
    types: set[str] = set()
    dynamic: set[tuple[str, str]] = set()
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).glob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                name = node.func.attr
                if name in ("append", "_record") and len(node.args) >= 2:
                    ty = _const_str(node.args[0])
                    if ty is not None and TYPE_RE.fullmatch(ty):
                        types.add(ty)
                    elif name == "append" and isinstance(node.args[0], ast.Name):
                        dynamic.add((rel, node.args[0].id))
                elif name in ("append_entries", "sign_entries", "record") and node.args:
                    for sub in ast.walk(node.args[0]):
                        if isinstance(sub, ast.Tuple) and sub.elts:
                            ty = _const_str(sub.elts[0])
                            if ty is not None:
                                types.add(ty)
    for site in dynamic:
        types |= DYNAMIC_TYPES.get(site, set())
    return types, dynamic


def sections(text: str) -> dict[str, str]:
    """``## heading`` -> the text up to the next such heading."""
    out: dict[str, str] = {}
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    for head, body in zip(parts[1::2], parts[2::2], strict=True):
        out[head.strip()] = body
    return out


def table_first_column(body: str) -> list[str]:
    """The backticked names in the first column of the first table in ``body``."""
    rows = [ln for ln in body.splitlines() if ln.startswith("| `")]
    first_table: list[str] = []
    seen_table = False
    for ln in body.splitlines():
        if ln.startswith("|"):
            seen_table = True
            if ln in rows:
                first_table.append(ln)
        elif seen_table:
            break
    return [re.match(r"\| `([^`]+)`", ln)[1] for ln in first_table]  # type: ignore[index]


# -- entry types ---------------------------------------------------------------------


def test_every_appended_entry_type_is_documented_and_nothing_else() -> None:
    types, dynamic = appended_types()
    unknown = dynamic - set(DYNAMIC_TYPES)
    assert not unknown, f"entries appended with a variable type, not in DYNAMIC_TYPES: {unknown}"
    documented = set(sections((DOCS / "entries.md").read_text()))
    assert types - documented == set(), (
        f"entry types missing from docs/entries.md: {types - documented}"
    )
    assert documented - types == set(), (
        f"docs/entries.md documents types no code writes: {documented - types}"
    )


def test_the_type_walk_finds_the_kinds_of_call_it_must() -> None:
    """The walk sees constant, ``_record`` and ``append_entries`` types (a sanity check:
    an empty result would make the test above pass on an empty document)."""
    types, _ = appended_types()
    assert {"ingest", "sighting", "note", "lock", "delete", "export", "key"} <= types


def test_entry_examples_are_their_sections_type_and_use_described_fields() -> None:
    for ty, body in sections((DOCS / "entries.md").read_text()).items():
        blocks = re.findall(r"```json\n(.*?)```", body, flags=re.S)
        assert blocks, f"## {ty}: no example"
        for block in blocks:
            example = json.loads(block)
            assert example["type"] == ty, f"## {ty}: an example of type {example['type']}"
            assert set(example) >= ENVELOPE, f"## {ty}: example lacks envelope fields"
            for key in set(example) - ENVELOPE:
                assert f"`{key}`" in body, f"## {ty}: example field {key!r} is not described"


# -- the bag -------------------------------------------------------------------------


def test_bag_doc_lists_the_verifiers_files_tsv_columns_in_order() -> None:
    body = sections((DOCS / "bag.md").read_text())["custody/files.tsv"]
    assert tuple(table_first_column(body)) == FILES_TSV_HEAD


def test_bag_doc_lists_the_bag_info_keys_signed_and_unsigned() -> None:
    body = sections((DOCS / "bag.md").read_text())["bag-info.txt"]
    keys = table_first_column(body)
    unsigned = [k for k in keys if f"`{k}` |" in body and "**unsigned**" in _row(body, k)]
    assert set(keys) - set(unsigned) == set(SIGNED_INFO)
    assert unsigned == ["Bag-Software-Agent"]
    assert not set(unsigned) & set(SIGNED_INFO)


def _row(body: str, key: str) -> str:
    return next(ln for ln in body.splitlines() if ln.startswith(f"| `{key}`"))


# -- the worked example --------------------------------------------------------------


def _vectors() -> dict[str, object]:
    data: dict[str, object] = json.loads((VECTORS / "tlog-vectors.json").read_text())
    return data


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_worked_example_hashes_and_checkpoint_signature() -> None:
    doc = (DOCS / "ledger.md").read_text()
    leaf0, leaf1 = _h(b"\x00leaf-0"), _h(b"\x00leaf-1")
    root2 = _h(b"\x01" + leaf0 + leaf1)
    assert root2.hex() == _vectors()["roots"][2]["root"]  # type: ignore[index]
    for value in (leaf0.hex(), leaf1.hex(), root2.hex()):
        assert value in doc
    vkey = (VECTORS / "log.vkey").read_text().strip()
    assert vkey in doc
    name, kid, key_b64 = vkey.split("+")
    raw = base64.b64decode(key_b64)
    public = raw[1:]
    assert raw[0] == 1 and public.hex() in doc
    assert _h(name.encode() + b"\n\x01" + public)[:4].hex() == kid == "2028d413"
    note = (VECTORS / "checkpoint").read_text()
    assert note in doc.replace("```\n", "")  # the note, verbatim, in a code block
    body, sig_line = note.split("\n\n")
    message = (body + "\n").encode()
    assert f"the {len(message)} bytes before the blank line" in doc
    sig = base64.b64decode(sig_line.strip().rsplit(" ", 1)[1])
    assert sig[:4].hex() == kid and sig[4:].hex() in doc
    nacl.bindings.crypto_sign_open(sig[4:] + message, public)  # raises if it does not verify
    root = base64.b64decode(body.split("\n")[2])
    assert root.hex() in doc


def test_worked_example_inclusion_proof_steps() -> None:
    doc = (DOCS / "ledger.md").read_text()
    case = next(
        c
        for c in _vectors()["inclusion"]  # type: ignore[attr-defined]
        if c["valid"] and c["index"] == 42 and c["size"] == 100
    )
    proof = [bytes.fromhex(p) for p in case["proof"]]
    text = (
        "c2sp.org/tlog-proof@v1\nindex 42\n"
        + "".join(base64.b64encode(p).decode() + "\n" for p in proof)
        + "\n"
        + (VECTORS / "checkpoint").read_text()
    )
    assert text in doc
    r = _h(b"\x00leaf-42")
    assert r.hex() == case["leaf_hash"] and r.hex() in doc
    fn, sn = 42, 99
    for step, p in enumerate(proof, start=1):
        if fn & 1 or fn == sn:
            r, side = _h(b"\x01" + p + r), "left"
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r, side = _h(b"\x01" + r + p), "right"
        fn, sn = fn >> 1, sn >> 1
        row = f"| {step} | `{p.hex()[:8]}…{p.hex()[-6:]}` | {side} | `{r.hex()}` |"
        assert row in doc, row
    assert sn == 0 and r.hex() == case["root"]


def test_worked_example_tiles() -> None:
    doc = (DOCS / "ledger.md").read_text()
    tiles = VECTORS / "tiles"
    bundle = (tiles / "tile/entries/000").read_bytes()
    assert bundle[:16].hex(" ") in doc and f"{len(bundle):,} bytes for 256 entries" in doc
    level0 = (tiles / "tile/0/000").read_bytes()
    assert level0[:32] == _h(b"\x00leaf-0")
    level1 = (tiles / "tile/1/000.p/2").read_bytes()

    def mth(hashes: list[bytes]) -> bytes:
        while len(hashes) > 1:
            hashes = [_h(b"\x01" + hashes[i] + hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    first = mth([level0[i : i + 32] for i in range(0, len(level0), 32)])
    assert first == level1[:32] and first.hex() in doc
    right = (tiles / "tile/0/002.p/88").read_bytes()
    hs = [right[i : i + 32] for i in range(0, len(right), 32)]
    a = _h(b"\x01" + level1[:32] + level1[32:])
    root = _h(
        b"\x01" + a + _h(b"\x01" + mth(hs[:64]) + _h(b"\x01" + mth(hs[64:80]) + mth(hs[80:])))
    )
    assert root.hex() == _vectors()["tiles"]["root"]  # type: ignore[index]
    assert root.hex() in doc


def test_worked_example_custody_entry() -> None:
    doc = (DOCS / "ledger.md").read_text()
    key = _vectors()["keys"][0]  # type: ignore[index]
    seed = bytes.fromhex(key["seed_hex"])
    public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
    fields = {
        "v": 1,
        "type": "note",
        "time": "2025-11-30T08:00:00.000Z",
        "station": key["name"],
        "operator": "duty officer 010203",
        "text": "封条 4471 完好 (seal 4471 intact)",
    }
    message = b"custody-entry/v1\n" + rfc8785.dumps(fields)
    assert message.decode() in doc and f"Signed message ({len(message)} bytes" in doc
    sig = nacl.bindings.crypto_sign(message, secret)[:64]
    leaf = rfc8785.dumps({**fields, "sig": base64.b64encode(sig).decode()})
    assert leaf.decode() in doc and f"The leaf ({len(leaf)} bytes)" in doc
    assert _h(b"\x00" + leaf).hex() in doc
    # Our own code signs the same payload to the same bytes.
    ours = make_entry(
        Signer.parse(key["signer_key"]),
        key["name"],
        "note",
        {"operator": fields["operator"], "text": fields["text"]},
        fields["time"],
    )
    assert ours == leaf
    assert public.hex() in doc


# -- the benchmark summary -----------------------------------------------------------


def test_benchmark_summary_is_made_from_the_results_files() -> None:
    """benchmarks/RESULTS.md holds no hand-typed figure: it is what summarize.py
    makes of the RESULTS-*.md files the benchmarks wrote."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("summarize", REPO / "benchmarks" / "summarize.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0
