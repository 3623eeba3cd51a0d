"""Weight exports on a full disk (issue 16): refused before writing, with the path and the size
needed, leaving no ``.tmp`` behind and the previous export intact. The disk is a real tmpfs."""

import pytest

from areal_core.errors import ArealError
from areal_core.testing.faults import small_filesystem
from areal_core.testing.tiny import make_tiny_model
from areal_fsdp.config import FSDPEngineConfig
from areal_fsdp.engine import FSDPEngine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = FSDPEngine(FSDPEngineConfig(path=str(make_tiny_model(tmp_path_factory.mktemp("model")))))
    engine.initialize()
    yield engine
    engine.destroy()


def test_export_to_a_full_disk_is_refused_cleanly(engine):
    with small_filesystem(4 << 20) as root:
        engine.export_hf(str(root / "weights" / "v1"))  # fits
        (root / "filler").write_bytes(b"\0" * (2 << 20))
        with pytest.raises(ArealError, match=r"weight export v2: .*weights/v2 needs about .* free but its file system"):
            engine.export_hf(str(root / "weights" / "v2"))
        assert sorted(p.name for p in (root / "weights").iterdir()) == ["v1"]
        assert (root / "weights" / "v1" / "model.safetensors").is_file()
