"""Averaging quantized vectors across torch.distributed ranks by sending encoded messages (`nuq.codec`).

Two exchanges, a registry so the estimator and the benchmark pick one by name:

- `allgather`: every rank encodes its whole vector, all_gather's the messages (one uint8 row per rank),
  decodes all W rows and averages them. Sends ~n*b/8 bytes per peer; decodes W*n values.
- `alltoall` (reduce-scatter style): the vector is cut into W bucket-aligned chunks; rank r encodes
  chunk c and sends it to rank c only (all_to_all), rank c averages the W versions of its chunk and
  the float32 chunk means are all_gather'ed. Sends (W-1)/W of one message plus (W-1)/W of 4n bytes;
  decodes only n values. It wins once W*b/8 exceeds ~4 bytes per value (large W), or when decoding
  is the bottleneck.

Both give every rank the same result, bit for bit: chunk c of the vector is quantized with the random
stream positions it has in the whole vector (offset + chunk start), so the messages decode to exactly
the values a whole-vector encode gives, and the W decoded versions are summed in rank order then
divided by W.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from nuq import codec, kernel, packing
from nuq.buckets import plan
from nuq.quantizer import terngrad_clip


@dataclass
class Stream:
    """One rank's random stream for this exchange: Philox (seed, offset) of the vector's element 0."""
    seed: int
    offset: int


@dataclass
class Quant:
    """How the vector is quantized: levels, bucket size, bucket norm, TernGrad clipping of each bucket
    before snapping (`nuq_clip`, as `nuq.quantizer`), kernel backend (None: by device)."""
    levels: torch.Tensor
    bucket_size: int
    norm: str
    backend: str | None = None
    clip: bool = False

    @property
    def bits(self) -> int:
        """Bits of one packed level index."""
        return packing.bits_for_levels(self.levels.numel())

    def encode(self, x: torch.Tensor, stream: "Stream", start: int, out: torch.Tensor) -> torch.Tensor:
        """Encode the piece `x` that starts at element `start` of the vector into `out`."""
        if self.clip:
            x = terngrad_clip(x, self.bucket_size)
        return codec.encode(x, self.levels, self.bucket_size, self.norm, stream.seed, stream.offset + start,
                            out=out, backend=self.backend)


@dataclass
class ExchangeStats:
    """Per call: this rank's encoded size, the bytes it sends when each message goes straight to the
    peers that need it (no relaying), and seconds spent encoding, communicating and decoding."""
    message_bytes: int = 0
    bytes_sent: int = 0
    encode_s: float = 0.0
    comm_s: float = 0.0
    decode_s: float = 0.0

    def add(self, other: "ExchangeStats") -> None:
        self.message_bytes += other.message_bytes
        self.bytes_sent += other.bytes_sent
        self.encode_s += other.encode_s
        self.comm_s += other.comm_s
        self.decode_s += other.decode_s


# torch >= 2.13 names it all_gather_single; older releases all_gather_into_tensor
_all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _sync(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


@dataclass(frozen=True)
class Segment:
    """A range [start, end) of the flat vector quantized as its own vector (buckets restart at `start`,
    random stream positions offset + start ...); `raw` ranges travel as float32, unquantized."""
    start: int
    end: int
    raw: bool = False


def whole(n: int) -> list[Segment]:
    """The plan that quantizes the vector as one piece."""
    return [Segment(0, n)]


def plan_segments(sizes: list[int], bucket_size: int, network_wide: bool, skip_tail: bool) -> list[Segment]:
    """The segments of the bucketing plan (nuq/buckets.py) of gradients with `sizes` values, concatenated:
    each piece's quantized part, then its pass-through tail as a raw segment (empty ones left out)."""
    segments = []
    for p in plan(sizes, bucket_size, network_wide, skip_tail):
        if p.quantized:
            segments.append(Segment(p.start, p.cut))
        if p.raw:
            segments.append(Segment(p.cut, p.end, raw=True))
    return segments


@dataclass(frozen=True)
class SegmentLayout:
    """Where each segment's message sits in one rank's message: the quantized segments as (start, end,
    byte position, bytes), the raw ones as (segment, byte position), and the total bytes."""
    pieces: list[tuple[int, int, int, int]]
    raw: list[tuple[Segment, int]]
    nbytes: int


def segment_layout(segments: list[Segment], q: Quant) -> SegmentLayout:
    """The message layout of a segment plan (computed once per exchange, used by encode and every decode)."""
    pieces, raw, pos, bits = [], [], 0, q.bits
    for seg in segments:
        n = seg.end - seg.start
        size = 4 * n if seg.raw else codec.message_nbytes(n, bits, q.bucket_size)
        if seg.raw:
            raw.append((seg, pos))
        elif size:
            pieces.append((seg.start, seg.end, pos, size))
        pos += size
    return SegmentLayout(pieces, raw, pos)


def message_nbytes(segments: list[Segment], q: Quant) -> int:
    """Bytes of one rank's message under a segment plan."""
    return segment_layout(segments, q).nbytes


def encode_segments(x: torch.Tensor, segments: list[Segment] | SegmentLayout, q: Quant, stream: Stream,
                    out: torch.Tensor) -> torch.Tensor:
    """Write the message of flat `x` under `segments` (or their `segment_layout`) into uint8 `out` (segment messages
    back to back). On the CPU all quantized segments are encoded by one kernel call (a model's layers:
    ~50 us of checks saved per layer); elsewhere, or with TernGrad clipping, one call each."""
    lay = segments if isinstance(segments, SegmentLayout) else segment_layout(segments, q)
    for seg, pos in lay.raw:
        out[pos:pos + 4 * (seg.end - seg.start)] = x[seg.start:seg.end].to(torch.float32).contiguous().view(torch.uint8)
    if not q.clip and out.is_contiguous() and kernel.fused_codec_supported(kernel.longest_piece(lay.pieces),
                                                                           x.device, q.bucket_size, q.backend):
        kernel.encode_pieces_packed(x, q.levels, q.bucket_size, q.norm, stream.seed, stream.offset,
                                    [p[:3] for p in lay.pieces], out)
        return out
    for start, end, pos, size in lay.pieces:
        q.encode(x[start:end], stream, start, out[pos:pos + size])
    return out


def decode_segments(message: torch.Tensor, n: int, segments: list[Segment] | SegmentLayout, q: Quant,
                    into: torch.Tensor) -> torch.Tensor:
    """Add the decoded values of `message` (n values under `segments`, or their `segment_layout`) to float32 `into`;
    return it. Where the fused decode runs, all quantized segments in one kernel call."""
    lay = segments if isinstance(segments, SegmentLayout) else segment_layout(segments, q)
    for seg, pos in lay.raw:
        into[seg.start:seg.end] += message[pos:pos + 4 * (seg.end - seg.start)].clone().view(torch.float32)
    if message.is_contiguous() and into.is_contiguous() and into.dtype == torch.float32 and \
            kernel.fused_decode_supported(kernel.longest_piece(lay.pieces), message.device, q.levels,
                                          q.bucket_size, q.backend):
        kernel.decode_pieces_packed(message, q.levels, q.bucket_size, [p[:3] for p in lay.pieces], into)
        return into
    for start, end, pos, size in lay.pieces:
        codec.decode(message[pos:pos + size], end - start, q.levels, q.bucket_size, backend=q.backend,
                     add_to=into[start:end])
    return into


def mean_allgather(x: torch.Tensor, q: Quant, stream: Stream, segments: list[Segment] | None = None,
                   group: dist.ProcessGroup | None = None) -> tuple[torch.Tensor, ExchangeStats]:
    """Average over ranks of each rank's quantized flat float32 `x`, via all_gather of encoded messages."""
    world = dist.get_world_size(group)
    lay = segment_layout(whole(x.numel()) if segments is None else segments, q)
    nbytes = lay.nbytes
    stats = ExchangeStats(message_bytes=nbytes, bytes_sent=(world - 1) * nbytes)
    t0 = time.perf_counter()
    mine = encode_segments(x, lay, q, stream, torch.empty(nbytes, dtype=torch.uint8, device=x.device))
    _sync(mine)
    t1 = time.perf_counter()
    rows = torch.empty(world, nbytes, dtype=torch.uint8, device=x.device)
    _all_gather_flat(rows.view(-1), mine, group=group)
    _sync(rows)
    t2 = time.perf_counter()
    total = torch.zeros(x.numel(), dtype=torch.float32, device=x.device)
    for r in range(world):  # rank order: the same float sum on every rank
        decode_segments(rows[r], x.numel(), lay, q, total)
    mean = total / world
    _sync(mean)
    t3 = time.perf_counter()
    stats.encode_s, stats.comm_s, stats.decode_s = t1 - t0, t2 - t1, t3 - t2
    return mean, stats


def chunk_bounds(n: int, bucket_size: int, world: int) -> list[tuple[int, int]]:
    """W (start, end) element ranges covering [0, n), cut at bucket boundaries, as even as buckets allow."""
    nb = -(-n // bucket_size)
    cuts = [min(n, (nb * c // world) * bucket_size) for c in range(world + 1)]
    cuts[-1] = n
    return list(zip(cuts[:-1], cuts[1:]))


def mean_alltoall(x: torch.Tensor, q: Quant, stream: Stream, segments: list[Segment] | None = None,
                  group: dist.ProcessGroup | None = None) -> tuple[torch.Tensor, ExchangeStats]:
    """Same result as `mean_allgather`, exchanged reduce-scatter style (module doc).

    Supports the one-piece plan only (network-wide quantization, `nuq_layer`)."""
    if segments is not None and segments != whole(x.numel()):
        raise ValueError("the alltoall exchange needs the vector quantized as one piece (nuq_layer=True, "
                         "no pass-through tail); use the allgather exchange for per-layer plans")
    world, me = dist.get_world_size(group), dist.get_rank(group)
    n = x.numel()
    bounds = chunk_bounds(n, q.bucket_size, world)
    sizes = [codec.message_nbytes(e - s, q.bits, q.bucket_size) for s, e in bounds]
    t0 = time.perf_counter()
    send = encode_segments(x, [Segment(s, e) for s, e in bounds], q, stream,
                           torch.empty(sum(sizes), dtype=torch.uint8, device=x.device))
    _sync(send)
    t1 = time.perf_counter()
    recv = torch.empty(world * sizes[me], dtype=torch.uint8, device=x.device)
    dist.all_to_all_single(recv, send, output_split_sizes=[sizes[me]] * world, input_split_sizes=sizes,
                           group=group)
    _sync(recv)
    t2 = time.perf_counter()
    s, e = bounds[me]
    part = torch.zeros(e - s, dtype=torch.float32, device=x.device)
    if e > s:
        for r in range(world):
            codec.decode(recv[r * sizes[me]:(r + 1) * sizes[me]], e - s, q.levels, q.bucket_size,
                         backend=q.backend, add_to=part)
    part /= world
    _sync(part)
    t3 = time.perf_counter()
    width = max(e - s for s, e in bounds)
    padded = torch.zeros(width, dtype=torch.float32, device=x.device)
    padded[: e - s] = part
    gathered = torch.empty(world, width, dtype=torch.float32, device=x.device)
    _all_gather_flat(gathered.view(-1), padded, group=group)
    mean = torch.cat([gathered[r, : e_ - s_] for r, (s_, e_) in enumerate(bounds)])
    _sync(mean)
    t4 = time.perf_counter()
    sent = sum(size for c, size in enumerate(sizes) if c != me) + (world - 1) * 4 * width
    return mean, ExchangeStats(message_bytes=sum(sizes), bytes_sent=sent, encode_s=t1 - t0, comm_s=(t2 - t1) + (t4 - t3),
                               decode_s=t3 - t2)


EXCHANGES: dict[str, Callable[..., tuple[torch.Tensor, ExchangeStats]]] = {
    "allgather": mean_allgather,
    "alltoall": mean_alltoall,
}


def get_exchange(name: str) -> Callable[..., tuple[torch.Tensor, ExchangeStats]]:
    try:
        return EXCHANGES[name]
    except KeyError:
        raise ValueError(f"unknown exchange {name!r}; known: {', '.join(EXCHANGES)}") from None
