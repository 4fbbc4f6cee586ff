"""Every migration revision produces the same DDL forever.

A revision ``vN`` builds what schema version ``N`` adds by calling the DDL
generators with its version number (``dpdb.model.ddl``). If a later change to
the generators (the table model, the layout, type mapping) altered what an old
version generates, a database migrated today would differ from one migrated
when the revision was written. The SHA-256 of each version's DDL is frozen
here: entries are only ever added, for a new schema version (print them with
``python tests/test_ddl_frozen.py``), never edited.
"""

from __future__ import annotations

import hashlib

import pytest

from dpdb.model.ddl import added_columns_ddl, catalog_ddl, meta_ddl
from dpdb.model.felis import versions

PARTITION_ORDER = 2

FROZEN: dict[int, dict[str, str]] = {
    1: {
        "meta": "bce1bd396c803409fd87fc59f31d6262fa1745d630c325d67d8eab37d70c86b3",
        "meta_full": "bce1bd396c803409fd87fc59f31d6262fa1745d630c325d67d8eab37d70c86b3",
        "prompt": "263bd42bbb30e51c2af276c6d018c04a27860581c07fbc73f708d64f29d055ee",
        "release": "5b482b0f98fcf80341a7f2f1b3e7cc244059752586e5b0df78a636113ec6e68f",
    },
    2: {
        "meta": "a574fefa0df996141f061c2dbd6a2ebc4d0badf28e1c6f1e227ac90db2fd3681",
        "meta_full": "bce1bd396c803409fd87fc59f31d6262fa1745d630c325d67d8eab37d70c86b3",
        "prompt": "263bd42bbb30e51c2af276c6d018c04a27860581c07fbc73f708d64f29d055ee",
        "release": "ba1f511397450c1d580f696823e837ba6a4f391a2e3f913100c1f7a9976ffeac",
        "upgrade_prompt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "upgrade_release": "eb2b2695b53d0b230870e3b8f18e979353170579a9666c6030963ac0f669e503",
    },
    3: {
        "meta": "f45a030b5453fef0fba5ad97290c2b57acdc4677632ca7a9cc2cbbbe4fea581c",
        "meta_full": "54a709671fb922cd4567d209d75e6a33e5ec173fa2b4c492e5a4a10be56fb7d7",
        "prompt": "676b06b9c2c9201524b3823c58cc40de7638badaf787172e4c74002afa24d46a",
        "release": "ba1f511397450c1d580f696823e837ba6a4f391a2e3f913100c1f7a9976ffeac",
        "upgrade_prompt": "1d68d1bc355737a8fb70c61c3353c317daa0f98a24f952499c076a73255321dc",
        "upgrade_release": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    4: {
        "meta": "de99427d3aa77c2642ec93b957a644df31ef60deb356283d1c03a5c94de95d4f",
        "meta_full": "65e8a80c6858155e475d38337b7dcc3e827b81c546a9ceb1c3c09321f7d3af78",
        "prompt": "3e508192e99269b4a60814933bbc7d90c9ee7e97aa455c7deaf16f4006deb2e0",
        "release": "7ea8f530df86cfa3e7336d244de0f00a8663f7b9f9395ac69cd7e67008e5f16b",
        "upgrade_prompt": "35666107e2a094b16d4705e4cfd20e55ccfafcc33f8cb6dfb1fbdb9d57511c1b",
        "upgrade_release": "ef54fedc769611e803fa11e4758d84969b15f8bb8fe89e896b80736f33fd278a",
    },
    5: {
        "meta": "b91b2729cfd3aef88b05aae2b05d9adbc3878e71303e2d8c226469987bc42b37",
        "meta_full": "90a2c02d1da75494a70527cd7f417b3751e59923621e00b89cbaa27076a560df",
        "prompt": "3e508192e99269b4a60814933bbc7d90c9ee7e97aa455c7deaf16f4006deb2e0",
        "release": "7ea8f530df86cfa3e7336d244de0f00a8663f7b9f9395ac69cd7e67008e5f16b",
        "upgrade_prompt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "upgrade_release": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    6: {
        "meta": "333205f359292855fec9ba8b3b6c65bafaf8c94e4a1f68b869b89f237491b3a6",
        "meta_full": "a984a9b4fe10dae3d0e53eadb2faaf6ad5c7581ee663030d2b48b5af8160130b",
        "prompt": "3e508192e99269b4a60814933bbc7d90c9ee7e97aa455c7deaf16f4006deb2e0",
        "release": "7ea8f530df86cfa3e7336d244de0f00a8663f7b9f9395ac69cd7e67008e5f16b",
        "upgrade_prompt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "upgrade_release": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    7: {
        "meta": "5b52351c5e03f953b7e77e938d93c3562130a91eb6df67d19d176cc7e19b7138",
        "meta_full": "2d2b9cbe77906d1e0424f9e657997db267e9b00a427903f2c005d2fb09e77593",
        "prompt": "3e508192e99269b4a60814933bbc7d90c9ee7e97aa455c7deaf16f4006deb2e0",
        "release": "7ea8f530df86cfa3e7336d244de0f00a8663f7b9f9395ac69cd7e67008e5f16b",
        "upgrade_prompt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "upgrade_release": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    8: {
        "meta": "9700d685a0ab3f55236aa8b1b6d39adee0811a1e5c8eaf8cd25caefaa60c9ade",
        "meta_full": "2779cdd0cbed15f262f8929b8600454bb2a4ceafc5aaac418bbce42445c3218f",
        "prompt": "3e508192e99269b4a60814933bbc7d90c9ee7e97aa455c7deaf16f4006deb2e0",
        "release": "7ea8f530df86cfa3e7336d244de0f00a8663f7b9f9395ac69cd7e67008e5f16b",
        "upgrade_prompt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "upgrade_release": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    9: {
        "meta": "a574fefa0df996141f061c2dbd6a2ebc4d0badf28e1c6f1e227ac90db2fd3681",
        "meta_full": "2779cdd0cbed15f262f8929b8600454bb2a4ceafc5aaac418bbce42445c3218f",
        "prompt": "d16c2000fedf57b276889599390e60b7c580a54c36c962ed8fb2e6945b6aa4d1",
        "release": "7ea8f530df86cfa3e7336d244de0f00a8663f7b9f9395ac69cd7e67008e5f16b",
        "upgrade_prompt": "346d11b586032c4bdb03a05b9e37fd3e5913c64754efdc50520936969a4ec818",
        "upgrade_release": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
    10: {
        "meta": "14b48ade245cb6c1d10d2f343f355aa0796bcce87cb87a574e217ff1f639043d",
        "meta_full": "aab0da7f791900dfadb5a475e5c9b0c7e68e7b296482af6fce65c22f016e3562",
        "prompt": "d16c2000fedf57b276889599390e60b7c580a54c36c962ed8fb2e6945b6aa4d1",
        "release": "7ea8f530df86cfa3e7336d244de0f00a8663f7b9f9395ac69cd7e67008e5f16b",
        "upgrade_prompt": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "upgrade_release": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    },
}


def _sha(statements: list[str]) -> str:
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()


def generated(version: int) -> dict[str, str]:
    """SHA-256 of each piece of DDL that revision ``v<version>`` (or a catalog created at it) runs."""
    since = version - 1 if version > 1 else None
    out = {
        "meta": _sha(meta_ddl(version, since)),
        "meta_full": _sha(meta_ddl(version)),
        "prompt": _sha(catalog_ddl("prompt", version, "prompt", PARTITION_ORDER)),
        "release": _sha(catalog_ddl("dr1", version, "release", PARTITION_ORDER)),
    }
    if since is not None:
        out["upgrade_prompt"] = _sha(added_columns_ddl("prompt", "prompt", since, version, PARTITION_ORDER))
        out["upgrade_release"] = _sha(added_columns_ddl("dr1", "release", since, version, PARTITION_ORDER))
    return out


@pytest.mark.parametrize("version", versions(), ids=lambda v: f"v{v}")
def test_revision_ddl_is_frozen(version: int) -> None:
    assert version in FROZEN, (
        f"schema v{version} has no frozen DDL: add generated({version}) to FROZEN "
        "(python tests/test_ddl_frozen.py prints it)"
    )
    now = generated(version)
    changed = sorted(k for k in FROZEN[version] if now.get(k) != FROZEN[version][k])
    assert not changed, f"the DDL that schema v{version} generates changed: {changed}"


def test_frozen_versions_are_shipped() -> None:
    assert set(FROZEN) <= set(versions())


if __name__ == "__main__":
    for v in versions():
        print(f"    {v}: {generated(v)!r},")
