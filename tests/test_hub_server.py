"""The real huggingface_hub client, over real HTTP on 127.0.0.1, against the test Hub of tests/hub_server.py.

huggingface_hub reads HF_ENDPOINT and HF_HUB_DISABLE_XET when it is imported, which may have happened already
(timm imports it), so every test points the imported client at the server with ``point_client_at`` (undone by
monkeypatch) and also passes ``endpoint=`` explicitly wherever the API takes it. One subprocess test checks the
other route, used by conftest.py: ``reserve_endpoint()`` before huggingface_hub is imported.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.sha import git_hash
from safetensors.torch import load_file, save_file

if str(Path(__file__).resolve().parent) not in sys.path:  # tests/ is not a package (--import-mode=importlib)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import HubServer, point_client_at  # noqa: E402

TOKEN = "hf_dummy_token_for_tests"
SOURCE_FILES = ("model.safetensors", "config.json", "README.md")

pytestmark = pytest.mark.timeout(60)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server():
    with HubServer() as hub:
        yield hub


@pytest.fixture
def hub(server, monkeypatch):
    point_client_at(server.endpoint, monkeypatch)
    from huggingface_hub.utils._runtime import is_xet_available

    assert not is_xet_available(), "uploads must take the LFS path this server implements"
    yield server
    assert not server.errors, server.errors  # the server's own failures, answered 500


@pytest.fixture
def api(hub):
    return HfApi(endpoint=hub.endpoint, token=TOKEN)


@pytest.fixture
def repo_id():
    return f"tester/model-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    tensors = {"conv.weight": torch.randn(16, 3, 3, 3), "fc.weight": torch.randn(10, 64), "fc.bias": torch.zeros(10)}
    save_file(tensors, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"arch": "xnor_resnet18", "num_classes": 10}))
    (folder / "README.md").write_text("---\nlicense: mit\nlibrary_name: zoo\n---\n\n# A binary test model\n")
    return folder


@pytest.fixture
def uploaded(api, repo_id, model_dir):
    """A repo holding ``model_dir``, and the commit that uploaded it."""
    api.create_repo(repo_id)
    commit = api.upload_folder(repo_id=repo_id, folder_path=model_dir, commit_message="Upload model")
    return repo_id, commit


def test_upload_folder_then_snapshot_download_is_byte_identical(hub, uploaded, model_dir, tmp_path):
    repo_id, commit = uploaded
    assert len(commit.oid) == 40 and int(commit.oid, 16) >= 0
    assert commit.commit_url == f"{hub.endpoint}/{repo_id}/commit/{commit.oid}"

    # The weights went through the LFS batch API and a PUT of their sha256, the small files inline in the commit.
    weights_sha = sha256_of(model_dir / "model.safetensors")
    assert ("POST", f"/{repo_id}.git/info/lfs/objects/batch") in hub.requests
    assert ("PUT", f"/_lfs/{weights_sha}") in hub.requests
    assert ("POST", f"/api/models/{repo_id}/commit/main") in hub.requests
    assert TOKEN in hub.tokens

    cache = tmp_path / "cache"
    assert not cache.exists()
    snapshot = Path(snapshot_download(repo_id, cache_dir=cache, endpoint=hub.endpoint, token=TOKEN))
    assert snapshot.name == commit.oid
    assert sorted(p.name for p in snapshot.iterdir()) == sorted([*SOURCE_FILES, ".gitattributes"])
    for name in SOURCE_FILES:
        assert sha256_of(snapshot / name) == sha256_of(model_dir / name), name
    assert torch.equal(load_file(snapshot / "model.safetensors")["fc.weight"],
                       load_file(model_dir / "model.safetensors")["fc.weight"])


def test_hf_hub_download_single_file_with_hub_etags(hub, uploaded, model_dir, tmp_path):
    repo_id, commit = uploaded
    config = Path(hf_hub_download(repo_id, "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, token=TOKEN))
    weights = Path(hf_hub_download(repo_id, "model.safetensors", cache_dir=tmp_path, endpoint=hub.endpoint))
    assert config.read_bytes() == (model_dir / "config.json").read_bytes()
    assert weights.read_bytes() == (model_dir / "model.safetensors").read_bytes()
    # The cache names blobs by ETag: the git blob sha1 for regular files, the sha256 for LFS files.
    assert config.resolve().name == git_hash((model_dir / "config.json").read_bytes())
    assert weights.resolve().name == sha256_of(model_dir / "model.safetensors")

    url = hf_hub_url(repo_id, "model.safetensors", endpoint=hub.endpoint)
    meta = get_hf_file_metadata(url, token=TOKEN, endpoint=hub.endpoint)
    assert (meta.commit_hash, meta.etag) == (commit.oid, sha256_of(model_dir / "model.safetensors"))
    assert meta.size == (model_dir / "model.safetensors").stat().st_size


def test_second_commit_changes_sha_and_serves_new_content(hub, api, uploaded, model_dir, tmp_path):
    repo_id, first = uploaded
    second = api.upload_file(path_or_fileobj=b'{"arch": "xnor_resnet34"}', path_in_repo="config.json",
                             repo_id=repo_id, commit_message="Bump arch")
    assert second.oid != first.oid and len(second.oid) == 40
    assert api.model_info(repo_id).sha == second.oid

    latest = hf_hub_download(repo_id, "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, token=TOKEN)
    assert Path(latest).read_bytes() == b'{"arch": "xnor_resnet34"}'
    pinned = hf_hub_download(repo_id, "config.json", revision=first.oid, cache_dir=tmp_path, endpoint=hub.endpoint)
    assert Path(pinned).read_bytes() == (model_dir / "config.json").read_bytes()

    third = api.delete_file("README.md", repo_id=repo_id)
    assert third.oid not in (first.oid, second.oid)
    assert "README.md" not in api.list_repo_files(repo_id)
    assert "README.md" in api.list_repo_files(repo_id, revision=second.oid)


def test_model_info_lists_siblings(api, uploaded, model_dir):
    repo_id, commit = uploaded
    info = api.model_info(repo_id)
    assert info.id == repo_id and info.sha == commit.oid
    assert sorted(s.rfilename for s in info.siblings) == sorted([*SOURCE_FILES, ".gitattributes"])
    assert api.list_repo_files(repo_id) == sorted([*SOURCE_FILES, ".gitattributes"])

    detailed = {s.rfilename: s for s in api.model_info(repo_id, files_metadata=True).siblings}
    weights = detailed["model.safetensors"]
    assert weights.size == (model_dir / "model.safetensors").stat().st_size
    assert weights.lfs is not None and weights.lfs.sha256 == sha256_of(model_dir / "model.safetensors")
    assert detailed["config.json"].lfs is None
    assert detailed["config.json"].blob_id == git_hash((model_dir / "config.json").read_bytes())


def test_unknown_repo_raises_repository_not_found(hub, api, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nobody/nothing", "config.json", cache_dir=tmp_path, endpoint=hub.endpoint, token=TOKEN)
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("nobody/nothing", cache_dir=tmp_path, endpoint=hub.endpoint, token=TOKEN)


def test_missing_file_or_revision_raises(hub, uploaded, tmp_path):
    repo_id, commit = uploaded
    # RemoteEntryNotFoundError (an EntryNotFoundError) needs the server's "X-Error-Code: EntryNotFound"; without it
    # the client would fall back to the cache and raise LocalEntryNotFoundError instead.
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "missing.bin", cache_dir=tmp_path, endpoint=hub.endpoint, token=TOKEN)
    assert issubclass(RemoteEntryNotFoundError, EntryNotFoundError)
    # The 404 carries X-Repo-Commit, so the client records the missing file for that commit.
    assert (tmp_path / f"models--{repo_id.replace('/', '--')}" / ".no_exist" / commit.oid / "missing.bin").exists()
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="no-such-branch", cache_dir=tmp_path, endpoint=hub.endpoint)


def test_create_repo_exist_ok(api, repo_id):
    url = api.create_repo(repo_id)
    assert url.repo_id == repo_id
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(repo_id)
    assert excinfo.value.response.status_code == 409


def test_head_and_range_requests_over_plain_http(hub, uploaded, model_dir):
    repo_id, commit = uploaded
    url = f"{hub.endpoint}/{repo_id}/resolve/main/model.safetensors"
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD")) as resp:
        assert resp.status == 200 and resp.read() == b""
        assert resp.headers["X-Repo-Commit"] == commit.oid
        assert resp.headers["X-Linked-Etag"] == f'"{sha256_of(model_dir / "model.safetensors")}"'
        assert int(resp.headers["Content-Length"]) == (model_dir / "model.safetensors").stat().st_size
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=8-15"})) as resp:
        assert resp.status == 206
        assert resp.read() == (model_dir / "model.safetensors").read_bytes()[8:16]


def test_pytorch_hub_mixin_push_and_from_pretrained(hub, repo_id, tmp_path):
    from huggingface_hub import PyTorchModelHubMixin

    class Tiny(torch.nn.Module, PyTorchModelHubMixin):
        def __init__(self, width: int = 4):
            super().__init__()
            self.fc = torch.nn.Linear(width, 2)

    model = Tiny(width=6)
    model.push_to_hub(repo_id, token=TOKEN)  # uses huggingface_hub.constants.ENDPOINT, no endpoint argument
    loaded = Tiny.from_pretrained(repo_id, cache_dir=tmp_path, token=TOKEN)
    assert loaded.fc.in_features == 6
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_stop_closes_the_port():
    server = HubServer().start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass
    with urllib.request.urlopen(f"{server.endpoint}/api/validate-yaml", data=b"{}") as resp:
        assert resp.status == 200
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)


def test_reserve_endpoint_before_import_configures_a_fresh_client(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from hub_server import reserve_endpoint
hub = reserve_endpoint()
import huggingface_hub
from huggingface_hub import constants, create_repo, hf_hub_download, upload_file
from huggingface_hub.utils._runtime import is_xet_available
assert constants.ENDPOINT == hub.endpoint and not is_xet_available()
create_repo("tester/fresh", token="t")
upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id="tester/fresh", token="t")
path = hf_hub_download("tester/fresh", "a.txt", cache_dir={str(tmp_path)!r})
assert open(path, "rb").read() == b"hello"
print("ok", hub.endpoint)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok http://127.0.0.1:")


def test_seeded_repo_tree_listing(hub, api, tmp_path):
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    weights = bytes(range(256)) * 8
    sha = hub.seed("org/seeded", {"nested/dir/notes.txt": b"notes", "weights.bin": weights})
    assert hub.head("org/seeded") == sha and hub.files("org/seeded")["weights.bin"] == weights

    top = {entry.path: entry for entry in api.list_repo_tree("org/seeded")}
    assert isinstance(top["nested"], RepoFolder) and isinstance(top["weights.bin"], RepoFile)
    assert top["weights.bin"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert "nested/dir/notes.txt" not in top
    assert api.list_repo_files("org/seeded") == [".gitattributes", "nested/dir/notes.txt", "weights.bin"]

    folder = snapshot_download("org/seeded", allow_patterns=["nested/*"], cache_dir=tmp_path, endpoint=hub.endpoint)
    assert (Path(folder) / "nested/dir/notes.txt").read_bytes() == b"notes"
    assert not (Path(folder) / "weights.bin").exists()
