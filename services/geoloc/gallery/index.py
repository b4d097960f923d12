"""A GPS gallery indexed with FAISS: unit location embeddings, their coordinates, a manifest.

    gallery = GalleryIndex.build(embeddings, coordinates, encoder_sha256=...)
    probabilities, ids = gallery.softmax_top_k(queries, k, logit_scale)
    gallery.save(folder); GalleryIndex.load(folder); gallery.add(more_embeddings, more_coordinates)

The index type follows the gallery's size: exact inner product up to 1M points (GeoCLIP's
100K gallery is 205 MB) and, beyond, an inverted file over 8-bit scalar-quantised vectors
(IVF-SQ8, a quarter of the memory); HNSW can be asked for by name. Not IVF-PQ: GeoCLIP
multiplies cosines by its logit scale before the softmax, and product-quantised cosines
(errors of a few hundredths) moved the partition function by up to a factor e^2.7 in our
tests, where SQ8's (about 1e-3) leave it within a few per cent.

GeoCLIP's probabilities are a softmax over the whole gallery, so a search also needs the
partition function: exact for a flat index, estimated otherwise from the retrieved neighbours
plus a uniform sample of the rest (docs/gallery.md).
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np

from geoloc.artifacts.files import written_atomically

# FAISS 1.15 hands flat search to BLAS only from 128,000 queries; from 20 on, batches of
# queries run 5-9x faster (docs/design.md §4).
faiss.cvar.distance_compute_blas_threshold = 20

FLAT_MAX = 1_000_000
HNSW_LINKS = 32
# Image queries sit far from every location vector (median best cosine 0.39 on val), which HNSW
# handles worse than in-distribution queries: efSearch 128 found 78 % of the exact top 10 on
# the 100K gallery indexed as HNSW, 512 finds 97.5 % at 0.36 ms a query.
HNSW_EF_SEARCH = 512
IVF_NPROBE = 32
IVF_TRAINING_PER_LIST = 64
INDEX_TYPES = ("flat", "hnsw", "ivfsq8")
PARTITION_SAMPLE = 8192
INDEX_FILE, COORDINATES_FILE, LABELS_FILE, SAMPLE_FILE, MANIFEST_FILE = (
    "index.faiss",
    "coordinates.npy",
    "labels.npy",
    "partition_sample.npy",
    "manifest.json",
)


def index_type_for(count: int) -> str:
    """The index a gallery of `count` points gets: "flat" up to FLAT_MAX, "ivfsq8" beyond.

    HNSW stays available by name but is not chosen: image queries lie far from every location
    vector, and on a 1M gallery HNSW at efSearch 512 found 71 % of the exact top 10 where
    IVF-SQ8 at nprobe 32 found 91 % in the same time (docs/gallery.md).
    """
    return "flat" if count <= FLAT_MAX else "ivfsq8"


def new_faiss_index(index_type: str, dimension: int, count: int) -> faiss.Index:
    if index_type == "flat":
        return faiss.IndexFlatIP(dimension)
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        return index
    if index_type == "ivfsq8":
        return faiss.index_factory(dimension, f"IVF{inverted_lists_for(count)},SQ8", faiss.METRIC_INNER_PRODUCT)
    raise ValueError(f"unknown index type {index_type!r}; known: {', '.join(INDEX_TYPES)}")


def inverted_lists_for(count: int) -> int:
    """4 sqrt(n) lists, at least 39 training points each (k-means needs them), at most 4096
    (beyond, training takes longer than it saves on two cores)."""
    return max(1, min(int(4 * math.sqrt(count)), count // 39, 4096))


@dataclass
class GalleryManifest:
    """What a saved gallery is: enough to refuse one built with other encoder weights."""

    encoder_sha256: str
    count: int
    dimension: int
    index_type: str
    metric: str = "inner_product"
    normalized: bool = True
    sources: list[str] = field(default_factory=list)


class GalleryIndex:
    def __init__(
        self,
        index: faiss.Index,
        coordinates: np.ndarray,
        manifest: GalleryManifest,
        labels: np.ndarray | None = None,
        partition_sample: np.ndarray | None = None,
    ):
        self.index = index
        self.coordinates = coordinates
        self.manifest = manifest
        self.labels = labels
        self.partition_sample = partition_sample
        self._gpu_vectors = None  # a torch copy on the GPU, for the exact path (see load)
        self._configure_search()

    @property
    def exact(self) -> bool:
        return self.manifest.index_type == "flat"

    def __len__(self) -> int:
        return self.index.ntotal

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        coordinates: np.ndarray,
        *,
        encoder_sha256: str,
        labels=None,
        index_type: str = "auto",
        source: str = "",
        seed: int = 0,
    ) -> GalleryIndex:
        """A gallery of unit `embeddings` [n, d] at `coordinates` [n, 2] (lat, lon degrees).

        With faiss-gpu and a GPU, an IVF index's k-means runs on the GPU.
        """
        vectors = _unit_rows(embeddings)
        kind = index_type_for(len(vectors)) if index_type == "auto" else index_type
        index = new_faiss_index(kind, vectors.shape[1], len(vectors))
        if not index.is_trained:
            rng = np.random.default_rng(seed)
            lists = faiss.extract_index_ivf(index).nlist
            training = vectors[
                rng.choice(len(vectors), size=min(len(vectors), IVF_TRAINING_PER_LIST * lists), replace=False)
            ]
            index = _trained(index, training)
        manifest = GalleryManifest(encoder_sha256, 0, vectors.shape[1], kind, sources=[source] if source else [])
        sample = None if kind == "flat" else np.empty((0, vectors.shape[1]), np.float32)
        gallery = cls(index, np.empty((0, 2)), manifest, None if labels is None else np.empty(0, dtype=str), sample)
        gallery.add(vectors, coordinates, labels=labels, seed=seed)
        return gallery

    def add(
        self, embeddings: np.ndarray, coordinates: np.ndarray, *, labels=None, source: str = "", seed: int = 0
    ) -> None:
        """Adds points without rebuilding; approximate indexes keep a uniform partition sample."""
        vectors = _unit_rows(embeddings)
        coordinates = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
        if len(vectors) != len(coordinates) or vectors.shape[1] != self.manifest.dimension:
            raise ValueError(
                f"got {len(vectors)} x {vectors.shape[1]} embeddings for {len(coordinates)} coordinates; "
                f"this gallery holds {self.manifest.dimension}-d vectors"
            )
        if (self.labels is None) != (labels is None):
            raise ValueError("labels must be given for every point of a labelled gallery, and only for one")
        previous = len(self)
        self.index.add(vectors)
        self.coordinates = np.concatenate([self.coordinates, coordinates])
        if labels is not None:
            self.labels = np.concatenate([self.labels, np.asarray(labels, dtype=str)])
        if self.partition_sample is not None:
            self.partition_sample = _reservoir(
                self.partition_sample, vectors, previous, np.random.default_rng(seed + previous)
            )
        self.manifest.count = len(self)
        if source:
            self.manifest.sources.append(source)

    def vectors(self) -> np.ndarray:
        """The stored unit vectors [n, d] of a flat index, as a view (no copy)."""
        if not self.exact:
            raise ValueError(f"a {self.manifest.index_type} index does not keep its vectors exactly")
        flat = faiss.rev_swig_ptr(self.index.get_xb(), len(self) * self.manifest.dimension)
        return flat.reshape(len(self), self.manifest.dimension)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Cosines [q, k], best first, and the gallery ids [q, k] of the k nearest points."""
        scores, ids = self.index.search(_unit_rows(queries), k)
        return scores, ids

    def softmax_top_k(self, queries: np.ndarray, k: int, logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """GeoCLIP's probabilities [q, k] of the k most likely points, and their ids [q, k].

        The probabilities are the softmax over the whole gallery. For a flat index one pass
        over the vectors gives both the top k and the exact partition function.
        """
        queries = _unit_rows(queries)
        if self._gpu_vectors is not None:
            return _softmax_top_k_torch(self._gpu_vectors, queries, k, logit_scale)
        if self.exact:
            logits = logit_scale * (queries @ self.vectors().T)
            ids = (
                np.argpartition(-logits, k - 1, axis=1)[:, :k]
                if k < len(self)
                else np.tile(np.arange(len(self)), (len(queries), 1))
            )
            top = np.take_along_axis(logits, ids, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            ids, top = np.take_along_axis(ids, order, axis=1), np.take_along_axis(top, order, axis=1)
            return np.exp(top.astype(np.float64) - _logsumexp(logits)[:, None]), ids
        scores, ids = self.search(queries, k)
        log_z = self.log_partition(queries, logit_scale, top_scores=scores)
        return np.exp(logit_scale * scores.astype(np.float64) - log_z[:, None]), ids

    def log_partition(
        self, queries: np.ndarray, logit_scale: float, top_scores: np.ndarray | None = None
    ) -> np.ndarray:
        """log Σ_gallery exp(logit_scale · cos(q, g)) for each query [q].

        Exact for a flat index. Otherwise the retrieved `top_scores` count once each and a
        uniform sample of the gallery stands for the rest, scaled to its size.
        """
        queries = _unit_rows(queries)
        if self.exact:
            return _logsumexp(logit_scale * (queries @ self.vectors().T))
        if top_scores is None:
            top_scores, _ = self.search(queries, min(100, len(self)))
        head = logit_scale * top_scores
        tail = logit_scale * (queries @ self.partition_sample.T)
        rest = max(len(self) - top_scores.shape[1], 0)
        # Sample members scoring above the k-th retrieved score are (mostly) the retrieved
        # ones: leave them out of the tail so they are not counted twice.
        tail = np.where(tail < head[:, -1:], tail, -np.inf)
        kept = np.maximum((tail > -np.inf).sum(axis=1), 1)
        tail_log = _logsumexp(tail) + np.log(rest / kept) if rest else np.full(len(queries), -np.inf)
        return np.logaddexp(_logsumexp(head), tail_log)

    def save(self, folder: Path) -> None:
        """Writes the gallery's files into `folder`, replacing a gallery saved there before.

        Every file is written under a temporary name (artifacts.files.written_atomically) and
        none is renamed into place until all are written: a save that fails or is killed while
        writing leaves the previous gallery as it was. The manifest is renamed last, so a first
        save cut short leaves no manifest (loaded_gallery then builds again), and the files this
        gallery lacks (labels, a partition sample) are removed once the new ones are in place.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {COORDINATES_FILE: self.coordinates, LABELS_FILE: self.labels, SAMPLE_FILE: self.partition_sample}
        with ExitStack() as renames:  # each file's rename runs as the stack unwinds, the first entered last
            manifest = renames.enter_context(written_atomically(folder / MANIFEST_FILE))
            with_index = renames.enter_context(written_atomically(folder / INDEX_FILE))
            faiss.write_index(_cpu_index(self.index), faiss.PyCallbackIOWriter(with_index.write))
            for name, array in arrays.items():
                if array is not None:
                    np.save(renames.enter_context(written_atomically(folder / name)), array, allow_pickle=False)
            manifest.write((json.dumps(asdict(self.manifest), indent=2) + "\n").encode())
        for name, array in arrays.items():
            if array is None:
                (folder / name).unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: Path, use_gpu: bool = False, nprobe: int = IVF_NPROBE) -> GalleryIndex:
        """A saved gallery; `nprobe` is how many inverted lists an IVF gallery scans per query."""
        folder = Path(folder)
        manifest = GalleryManifest(**json.loads((folder / MANIFEST_FILE).read_text()))
        index = faiss.read_index(str(folder / INDEX_FILE))
        coordinates = np.load(folder / COORDINATES_FILE)
        if index.ntotal != manifest.count or len(coordinates) != manifest.count:
            raise ValueError(
                f"{folder} is inconsistent: manifest {manifest.count} points, index {index.ntotal}, "
                f"coordinates {len(coordinates)}"
            )
        labels = np.load(folder / LABELS_FILE) if (folder / LABELS_FILE).exists() else None
        if labels is not None and len(labels) != manifest.count:
            raise ValueError(f"{folder} is inconsistent: manifest {manifest.count} points, labels {len(labels)}")
        sample = np.load(folder / SAMPLE_FILE) if (folder / SAMPLE_FILE).exists() else None
        gallery = cls(index, coordinates, manifest, labels, sample)
        gallery.set_nprobe(nprobe)
        if use_gpu:
            gallery.move_to_gpu()
        return gallery

    def set_nprobe(self, nprobe: int) -> None:
        """IVF lists scanned per query (no effect on other indexes): more finds more of the exact
        top k, proportionally slower."""
        if self.manifest.index_type == "ivfsq8":
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = max(1, min(nprobe, ivf.nlist))

    def move_to_gpu(self, device: str = "cuda") -> None:
        """Searches on the GPU from now on, where one is: a flat gallery as a torch matrix (top k
        and the exact softmax in one product), an IVF one as a faiss-gpu index. HNSW has no GPU
        version and stays on the CPU. `device="cpu"` runs the torch path on the CPU (tests)."""
        import torch

        if self.exact and (device == "cpu" or torch.cuda.is_available()):
            self._gpu_vectors = torch.from_numpy(self.vectors().copy()).to(device)
        elif self.manifest.index_type == "ivfsq8" and _gpus() > 0:
            self.index = faiss.index_cpu_to_all_gpus(self.index)  # nprobe is copied over

    def _configure_search(self) -> None:
        if self.manifest.index_type == "hnsw":
            self.index.hnsw.efSearch = HNSW_EF_SEARCH
        self.set_nprobe(IVF_NPROBE)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a [n, d] array, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    """Row-wise log Σ exp; -inf for a row of nothing but -inf (an empty tail sample)."""
    top = logits.max(axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0].astype(np.float64)


def _reservoir(sample: np.ndarray, new: np.ndarray, seen: int, rng: np.random.Generator) -> np.ndarray:
    """Keeps `sample` a uniform sample (up to PARTITION_SAMPLE rows) of all rows seen, `new` included."""
    room = PARTITION_SAMPLE - len(sample)
    sample = np.concatenate([sample, new[:room]]) if room > 0 else sample.copy()
    rest = new[max(room, 0) :]
    if len(rest):
        # Row number p (0-based, over every row ever seen) replaces a random slot with
        # probability PARTITION_SAMPLE / (p + 1): Algorithm R, vectorised.
        positions = seen + max(room, 0) + np.arange(len(rest))
        slots = (rng.random(len(rest)) * (positions + 1)).astype(np.int64)
        chosen = slots < PARTITION_SAMPLE
        sample[slots[chosen]] = rest[chosen]
    return sample


def _softmax_top_k_torch(vectors, queries: np.ndarray, k: int, logit_scale: float) -> tuple[np.ndarray, np.ndarray]:
    import torch

    logits = logit_scale * (torch.from_numpy(queries).to(vectors.device) @ vectors.T)
    top, ids = torch.topk(logits, k, dim=1)
    probabilities = torch.exp(top.double() - torch.logsumexp(logits.double(), dim=1, keepdim=True))
    return probabilities.cpu().numpy(), ids.cpu().numpy()


def _trained(index: faiss.Index, training: np.ndarray) -> faiss.Index:
    """`index` trained on `training`, on the GPU where faiss-gpu has one; always returned on the CPU."""
    if _gpus() == 0:
        index.train(training)
        return index
    on_gpu = faiss.index_cpu_to_all_gpus(index)
    on_gpu.train(training)
    return faiss.index_gpu_to_cpu(on_gpu)


def _gpus() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def _cpu_index(index: faiss.Index) -> faiss.Index:
    return faiss.index_gpu_to_cpu(index) if "Gpu" in type(index).__name__ else index
