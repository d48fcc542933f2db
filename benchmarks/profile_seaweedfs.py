"""Where the object store's CPU goes when prnf writes chunks to it (issue 16).

Run ``python benchmarks/profile_seaweedfs.py [--puts 100] [--top 15]``.

Starts the production profile's SeaweedFS alone (the same ``weed server`` command as ``prnf
services up``, on free ports in a temporary data root) with Go's CPU profiler on
(``-cpuprofile``), puts ``--puts`` objects of one compressed chunk each (a Blosc zstd +
bitshuffle chunk of 10^5 abc3d-sized float64 rows, 2.2 MB, as ``Dataset.write_chunk`` stores
them) through s3fs configured as the product's data stores are, stops the server with SIGTERM
(the profiler writes its file on exit) and prints the wall and CPU time per put and the
functions taking the most of SeaweedFS's CPU time, flat and cumulative. The profile is Go's
pprof format (gzipped protobuf), read here by a small reader so that no Go toolchain is needed.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# -- a minimal reader of Go's pprof profiles (github.com/google/pprof/proto/profile.proto) ------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _ints(value, wire: int) -> list[int]:
    """A repeated integer field: one varint, or a packed run of them."""
    if wire == 0:
        return [value]
    out, i = [], 0
    while i < len(value):
        item, i = _varint(value, i)
        out.append(item)
    return out


def read_cpu_profile(path: Path) -> tuple[float, collections.Counter, collections.Counter]:
    """Total CPU seconds and the seconds by function: flat (on top of the stack) and
    cumulative (anywhere on it)."""
    buf = gzip.decompress(path.read_bytes())
    strings: list[str] = []
    samples: list[tuple[list[int], list[int]]] = []
    locations: dict[int, list[int]] = {}
    functions: dict[int, int] = {}
    for number, _, value in _fields(buf):
        if number == 2:  # Sample: location_id = 1, value = 2
            ids: list[int] = []
            values: list[int] = []
            for n, w, v in _fields(value):
                if n == 1:
                    ids += _ints(v, w)
                elif n == 2:
                    values += _ints(v, w)
            samples.append((ids, values))
        elif number == 4:  # Location: id = 1, line = 4 (Line: function_id = 1)
            lid, fids = 0, []
            for n, _, v in _fields(value):
                if n == 1:
                    lid = v
                elif n == 4:
                    fids += [f for m, _, f in _fields(v) if m == 1]
            locations[lid] = fids
        elif number == 5:  # Function: id = 1, name = 2 (an index into the string table)
            fid = name = 0
            for n, _, v in _fields(value):
                if n == 1:
                    fid = v
                elif n == 2:
                    name = v
            functions[fid] = name
        elif number == 6:
            strings.append(value.decode())
    flat: collections.Counter = collections.Counter()
    cumulative: collections.Counter = collections.Counter()
    total = 0.0
    for ids, values in samples:
        seconds = values[-1] / 1e9  # the last sample type of a Go CPU profile: cpu nanoseconds
        total += seconds
        names = [strings[functions[f]] for loc in ids for f in locations.get(loc, [])]
        if names:
            flat[names[0]] += seconds
        for name in set(names):
            cumulative[name] += seconds
    return total, flat, cumulative


# -- the server and the puts ------------------------------------------------------------------
def chunk_bytes() -> bytes:
    """One compressed chunk as a store holds it: 10^5 rows x 3 float64, Blosc zstd bitshuffle."""
    import numpy as np
    from numcodecs import Blosc

    rows = np.random.default_rng(0).standard_normal((100_000, 3))
    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE).encode(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, default=100)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()

    import psutil
    import s3fs

    from flows.services import stack
    from flows.services.config import GRPC_OFFSET, Layout, ServicesConfig
    from flows.services.credentials import load_or_create
    from flows.services.manager import remove_weed_sockets
    from flows.services.process import free_ports
    from prnf_core import objectstore

    root = Path(tempfile.mkdtemp(prefix="profile_seaweedfs_"))
    layout = Layout(root)
    for folder in (layout.dir, layout.logs, layout.weed):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    s3, master, volume, filer = free_ports(4, offset=GRPC_OFFSET)
    config = ServicesConfig(s3_port=s3, weed_master_port=master, weed_volume_port=volume,
                            weed_filer_port=filer)
    creds = load_or_create(layout.credentials)
    stack.write_s3_identities(layout, creds)
    profile = root / "weed.cpu.pprof"
    server = stack.service("seaweedfs", config, creds, layout)
    server.args.append(f"-cpuprofile={profile}")
    server.start()
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                stack.create_buckets(config, creds)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise SystemExit(f"SeaweedFS did not start; see {server.log}") from None
                time.sleep(0.5)
        os.environ.update(stack.client_env(config, creds, layout))
        fs = s3fs.S3FileSystem(**objectstore.storage_options())
        data = chunk_bytes()
        weed = psutil.Process(server.pid)
        for i in range(3):  # connections and volumes made before the timing
            fs.pipe_file(f"{stack.DATA_BUCKET}/warm/{i}", data)
        cpu = sum(weed.cpu_times()[:2])
        started = time.perf_counter()
        for i in range(args.puts):
            fs.pipe_file(f"{stack.DATA_BUCKET}/profile/c/{i}", data)
        wall = time.perf_counter() - started
        cpu = sum(weed.cpu_times()[:2]) - cpu
        print(f"{args.puts} puts of {len(data) / 1e6:.2f} MB: {wall / args.puts * 1e3:.1f} ms "
              f"each, {len(data) * args.puts / wall / 1e6:.0f} MB/s; SeaweedFS CPU "
              f"{cpu / args.puts * 1e3:.1f} ms a put "
              f"({len(data) * args.puts / cpu / 1e6:.0f} MB per CPU second)")
    finally:
        left = server.stop(grace=60)  # SIGTERM: the profiler writes its file on the way out
        remove_weed_sockets(config)  # the sockets a stopped weed leaves in /tmp
        if left:
            print("left behind:", left)
    if not profile.exists():
        raise SystemExit(f"no CPU profile was written; see {server.log}")
    total, flat, cumulative = read_cpu_profile(profile)
    print(f"\nSeaweedFS CPU profile: {total:.2f} s in all (start-up, warm-up and stop included)")
    for title, counter in (("flat", flat), ("cumulative", cumulative)):
        print(f"  {title}:")
        for name, seconds in counter.most_common(args.top):
            print(f"    {seconds / total:6.1%}  {name}")
    md5 = sum(s for name, s in flat.items() if name.startswith("crypto/md5."))
    print(f"MD5 (crypto/md5.*, flat): {md5 / total:.1%} of SeaweedFS's CPU time")
    for part, handler in (("the S3 gateway's PUT", "s3api.(*S3ApiServer).PutObjectHandler"),
                          ("the volume server's upload", "(*VolumeServer).PostHandler")):
        seconds = max((s for name, s in cumulative.items() if name.endswith(handler)), default=0)
        print(f"{part} ({handler}, cumulative): {seconds / total:.1%}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
