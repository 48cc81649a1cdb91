"""Sample data: the public real files tilefuse is tested on, fetched on demand.

Like ``skimage.data``: a registry of files that other software wrote (BigStitcher projects,
BDV-HDF5 from pybdv and the Java BigDataViewer stack, Nikon ND2, NIST MIST tiles, JPEG 2000),
each with the public URL of its original at a fixed commit and its SHA-256. :func:`fetch`
downloads a file once into a cache (with ``pooch``, the ``tilefuse[data]`` extra) and checks
its hash; :func:`find` prefers a local copy of the same folder layout (a checkout's
``../shared/data``) and falls back to the cache.

The cache is ``pooch.os_cache("tilefuse")`` unless the environment variable
``TILEFUSE_DATA_DIR`` names another folder.

Examples
--------
>>> from tilefuse import data
>>> path = data.fetch("bdv-h5/pybdv_example.xml")  # doctest: +SKIP
>>> root = data.find("../shared/data")  # a local copy if there is one, else the cache
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tilefuse.errors import NotFoundError

__all__ = ["REGISTRY", "SampleFile", "cache_dir", "fetch", "fetch_all", "find", "verify"]

logger = logging.getLogger(__name__)

ENV_VAR = "TILEFUSE_DATA_DIR"
_RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class SampleFile:
    """One registered file: where its original lives and what it must hash to.

    Attributes
    ----------
    name : str
        Relative path in the sample folder, e.g. ``"nd2/cluster.nd2"``.
    url : str
        The raw URL of the original at a fixed commit.
    sha256 : str
        Hex SHA-256 of the file.
    """

    name: str
    url: str
    sha256: str


# (repository, commit, path in the repository) of each file's original, by local name
_SOURCES: dict[str, tuple[str, str, str]] = {}


def _add(repo: str, commit: str, pairs: dict[str, str]) -> None:
    for local, remote in pairs.items():
        _SOURCES[local] = (repo, commit, remote)


_add(
    "d-v-b/pydantic-bigstitcher",
    "a6146fd70f41c7c10621a2e0c5240aab531da959",
    {
        f"bigstitcher-xml/bigstitcher_{i}.xml": f"tests/fixture/bigstitcher_{i}.xml"
        for i in range(7)
    },
)
_add(
    "AllenNeuralDynamics/Rhapso",
    "7f319e558720c5b819ad687f1d88225d6d5babea",
    {"bigstitcher-xml/rhapso_drosophila_dataset.xml": "tests/XML_test_data/dataset.xml"},
)
_add(
    "constantinpape/pybdv",
    "2b8b13391ee00d14105d8b0864b3878229e5a308",
    {
        "bdv-h5/pybdv_example.h5": "data/example.h5",
        "bdv-h5/example.h5": "data/example.h5",  # the name the XML refers to
        "bdv-h5/pybdv_example.xml": "data/example.xml",
    },
)
_MASTODON = "src/test/resources/org/mastodon/mamut/io/loader"
_add(
    "mastodon-sc/mastodon",
    "22381cc26860068655e92be31e09caf77b2314f8",
    {
        f"bdv-h5/mitosis_small_hdf5.{e}": f"{_MASTODON}/mitosis_small_hdf5.{e}"
        for e in ("h5", "xml")
    },
)
_ARCADIA = "src/arcadia_microscopy_tools/tests/data"
_add(
    "Arcadia-Science/arcadia-microscopy-tools",
    "2bb7876f9e462bc78aee385471ce3bc052887415",
    {
        f"nd2/{n}": f"{_ARCADIA}/{n}"
        for n in (
            "example-cerevisiae.nd2",
            "example-multichannel.nd2",
            "example-pbmc.nd2",
            "example-timelapse.nd2",
            "example-zstack.nd2",
            "known-metadata.yml",
        )
    },
)
_add(
    "soft-matter/pims_nd2",
    "c5b22a5b3b7af291b9bf38e7b9b69de59251efec",
    {"nd2/cluster.nd2": "pims_nd2/cluster.nd2"},
)
_add(
    "usnistgov/MIST",
    "82ab0879e0be28f06a38cbab91cb0c3c30c4874d",
    {
        **{
            f"mist-5x5/ImageName_t01_p{i:02d}.tif": f"test/ImageName_t01_p{i:02d}.tif"
            for i in range(1, 26)
        },
        **{
            f"mist-5x5/reference/{n}": f"test/stitched/{n}"
            for n in (
                "global-positions-1.txt",
                "img-statistics-1.txt",
                "relative-positions-1.txt",
                "relative-positions-no-optimization-1.txt",
            )
        },
    },
)
_add(
    "quintusdias/glymur",
    "8f6df0818390a7b5af9bf38200eb9568aa609bf5",
    {
        "jp2/uint16.j2k": "tests/data/misc/uint16.j2k",
        "jp2/text_GBR.jp2": "tests/data/from-openjpeg/text_GBR.jp2",
    },
)

# SHA-256 of each original, computed from the project's copies (bigstitcher_0.xml's from the
# published fixture's text in a public code index while the local copy was damaged; the restored
# copy hashes the same).
_SHA256: dict[str, str] = {
    "bdv-h5/example.h5": "3e69f2c903f85eca433dc4f4d05bbd99b7e1954b2b5eeadf07be68f04d166224",
    "bdv-h5/mitosis_small_hdf5.h5": "0818fcc8c74bb8df04061497ada676284a499933f9d61ff9bfbb93d3898be64e",
    "bdv-h5/mitosis_small_hdf5.xml": "646647b603b4e4b85ebf9960ffb72b568e0f903232e8390bfc039b19d693fba7",
    "bdv-h5/pybdv_example.h5": "3e69f2c903f85eca433dc4f4d05bbd99b7e1954b2b5eeadf07be68f04d166224",
    "bdv-h5/pybdv_example.xml": "a53c22b7646ffcbb3a6b5cf6c7cb5d18224373a7214e0efd0a228e9165f3e546",
    "bigstitcher-xml/bigstitcher_0.xml": "076b0537545209e1b78bdd0294536414c75493c4c4d36d8437692f13dbe0b797",
    "bigstitcher-xml/bigstitcher_1.xml": "687b161b61569819ea52119f4096c1ed448f08bf84b82401dd589e6ec4ab021e",
    "bigstitcher-xml/bigstitcher_2.xml": "420c13b6c49042ef504a56f1a671b2901bc2cdd9a44574f523d0c27ae844efba",
    "bigstitcher-xml/bigstitcher_3.xml": "9a0c9aed8bb9b2b5b0b9d8149006f452171a5c141047253c0c406a6f6a7f447f",
    "bigstitcher-xml/bigstitcher_4.xml": "bd02bc8fdd474551f8248833c34b7be76365d3a65d053d4a1a385d6e8c5185de",
    "bigstitcher-xml/bigstitcher_5.xml": "f5e5bd84e589957787ef75a9cc91933328d4696878526fb70a96da50a40e856d",
    "bigstitcher-xml/bigstitcher_6.xml": "190a200d7937de45ab7d08c6cd8eae8372f09666d682aabfffe48308e54c7acb",
    "bigstitcher-xml/rhapso_drosophila_dataset.xml": "b6d9cf9140f4910801d799f62e5b542c3a8062cc58347e63d16b3df94a6fb6a8",
    "jp2/text_GBR.jp2": "8ad44827d5a2e47f4b6b975f79e4cc03f45ce93c3127fba0bc5611369fcd3f7d",
    "jp2/uint16.j2k": "9fced069400f5236630cc21f277428f22c3a04dbf58e7072b34f193e9996e17c",
    "mist-5x5/ImageName_t01_p01.tif": "966537398c243697aedf24b3a2f405bdc09d857333b624db9eb760b528deaf95",
    "mist-5x5/ImageName_t01_p02.tif": "465ed45071b90f918d6158fda5c6e7ed4c562a55e9a9a8693f33fc41fbaec324",
    "mist-5x5/ImageName_t01_p03.tif": "cdacaa77f1207d9126b21814df7f6d5ddcba6a28e293bdf5b9510b537a1efdd7",
    "mist-5x5/ImageName_t01_p04.tif": "ab417d4f4c6523e6f3a0605351496223006ac3910163aa9851af60f2fc7867dd",
    "mist-5x5/ImageName_t01_p05.tif": "1216b648a431f5d9fa5f1118028d9e6309e2a2e200ff8ebcbc30d2e2fc70c416",
    "mist-5x5/ImageName_t01_p06.tif": "e4bbddb2f5e2847913450006abb091a47529caa7a3c601190f0dc4d98c422c69",
    "mist-5x5/ImageName_t01_p07.tif": "990ea343a06aec752803a50d7f24e37d8ad8f052819aeeb54d3c61a015c60565",
    "mist-5x5/ImageName_t01_p08.tif": "b325de0a19c558623063dce2c10a6ee4be3ad562d04b003d764b4302ac0715f0",
    "mist-5x5/ImageName_t01_p09.tif": "f61dac7f0391ebdaab3cba726fd2e77ab7ec7a0ba0c9f8b851c96ef49014eb09",
    "mist-5x5/ImageName_t01_p10.tif": "c7f84c7abbc6c836c89dc83d69c433eae16e138e140764e1ece798286ade6ccc",
    "mist-5x5/ImageName_t01_p11.tif": "219d3216bc11f713292869fd0a792135710401c369f246d1032a822fd637d79a",
    "mist-5x5/ImageName_t01_p12.tif": "a6f4cff3a1dd064dfcb385adef9c036619ca2a198f7f7c17179140fdbf2dcdfa",
    "mist-5x5/ImageName_t01_p13.tif": "8762a46d7f02b9068a97b5be5da66189904006e8273685eb2e6d90e4523abf8d",
    "mist-5x5/ImageName_t01_p14.tif": "4055d3bd90c5a4d18e75f9a7ddaee35560c8da14de8a7edefe3b9c4d5d7989dc",
    "mist-5x5/ImageName_t01_p15.tif": "2edf966faf25617c0476feb5b67b850fcaaa1c9fa7c2c88474e09cd3052db9f4",
    "mist-5x5/ImageName_t01_p16.tif": "209dc9d41bb51f28c2b11534c5944b88ae87bfa3eadc2f342fa8f069782aafb2",
    "mist-5x5/ImageName_t01_p17.tif": "2b04db77f886ae769b624a44849a8403635ad37af566498daa5747120c3cc44b",
    "mist-5x5/ImageName_t01_p18.tif": "2416c3248e9be1c528df0393679511ee78fc4a697f0d775eb9ef948f27784a8c",
    "mist-5x5/ImageName_t01_p19.tif": "ad7f2a7b84c5b52574b1b570d03d4807393aafa14475707b84ab5b22cda2e042",
    "mist-5x5/ImageName_t01_p20.tif": "32422b38246e498c869281f934c0b6e537073abfabcb397cbe8959cff6716a86",
    "mist-5x5/ImageName_t01_p21.tif": "f5921f8242f8c74e810370175d4216e318243527d32fd4f585b7ec42c06ebaf9",
    "mist-5x5/ImageName_t01_p22.tif": "12b7363461c17c15f6823c9339f358b0da017d527900aefa3bc34cc154b10d4c",
    "mist-5x5/ImageName_t01_p23.tif": "2b02e3a372a2784b4280f08262adeeb0571e511c7668cffeab3282b6e2f9778a",
    "mist-5x5/ImageName_t01_p24.tif": "732a3678ee85e363432ae284c3bdab7fcc8aff7acd3c53ad52390430c2e39ee3",
    "mist-5x5/ImageName_t01_p25.tif": "ab735c10e1163bf99f70b130e4ac5e4347d1344284c2e611ccafc76b51f2e28f",
    "mist-5x5/reference/global-positions-1.txt": "6bc4855c9fba4a5ecb00e4e822bb1ff2424e719275fc5b94935f6c1dfd18cff6",
    "mist-5x5/reference/img-statistics-1.txt": "3defe38db9e4ff385cf785caa3d835fce3814ff202af02c64c79bc2775df5cab",
    "mist-5x5/reference/relative-positions-1.txt": "81364784d6c32fb621ba42479462e266a0d8ae477c3bc9c97b0fdcb0e32f8ff8",
    "mist-5x5/reference/relative-positions-no-optimization-1.txt": "243eb04ab0c7f9475b1041f6c82855e4a3e9fd88032ec38e057144ba407cfcc6",
    "nd2/cluster.nd2": "f8ee69c3efbaaed4f892e986c3efd06372597ec084e75437243e8dd51388de62",
    "nd2/example-cerevisiae.nd2": "ca6852ec67223b20fa5c9a89bd8177899459b6711ffba9ffcff3078ee7c81a81",
    "nd2/example-multichannel.nd2": "fce978ec1fcf2b919c17caee041bc112539ad7b9df2e3790b22629d14529931d",
    "nd2/example-pbmc.nd2": "82a54fedc19e3c1264e39c51a725da9e2aee9c038c2110831a1019889f87a958",
    "nd2/example-timelapse.nd2": "2870ae6e45569a445198969b85f20dc7f693c0d8b99d5525f8889834a42c27d6",
    "nd2/example-zstack.nd2": "8fbd03ac58514f0460cc00098af54cde60a1a34e58560b2a2704e63c1a1b458a",
    "nd2/known-metadata.yml": "a19919e059a2905e12f3ea730029aff2564982df3e88bf837c36714712be32b2",
}

REGISTRY: dict[str, SampleFile] = {
    name: SampleFile(name, f"{_RAW}/{repo}/{commit}/{path}", _SHA256[name])
    for name, (repo, commit, path) in sorted(_SOURCES.items())
}
"""Every sample file by its relative name (the layout of the project's ``shared/data``)."""


def cache_dir() -> Path:
    """The folder :func:`fetch` downloads into (``$TILEFUSE_DATA_DIR`` or pooch's OS cache)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    from tilefuse._optional import require

    pooch = require("pooch", "data", "tilefuse.data")
    return Path(pooch.os_cache("tilefuse"))


def _pooch() -> Any:
    from tilefuse._optional import require

    pooch = require("pooch", "data", "tilefuse.data")
    return pooch.create(
        path=cache_dir(),
        base_url="",
        registry={n: f"sha256:{f.sha256}" for n, f in REGISTRY.items()},
        urls={n: f.url for n, f in REGISTRY.items()},
        retry_if_failed=2,
    )


def fetch(name: str, *, downloader: Any = None) -> Path:
    """Return the local path of a sample file, downloading and checking it if needed.

    Parameters
    ----------
    name : str
        A key of :data:`REGISTRY`, e.g. ``"bdv-h5/pybdv_example.xml"``.
    downloader : callable, optional
        A pooch downloader (``downloader(url, output_file, pooch)``); pooch's HTTP one by default.

    Returns
    -------
    Path
        The cached file, whose SHA-256 matches the registry.

    Raises
    ------
    KeyError
        If ``name`` is not registered.
    ValueError
        If the downloaded file does not match its SHA-256 (pooch deletes it).
    OSError
        If it cannot be downloaded (offline, say).
    """
    if name not in REGISTRY:
        msg = f"{name!r} is not a tilefuse sample file; known: {', '.join(REGISTRY)}"
        raise NotFoundError(msg)
    return Path(_pooch().fetch(name, downloader=downloader))


def fetch_all(*, downloader: Any = None) -> Path:
    """Fetch every registered file; return the cache folder (same layout as ``shared/data``)."""
    for name in REGISTRY:
        fetch(name, downloader=downloader)
    return cache_dir()


def find(local: str | os.PathLike[str] | None = None, *, downloader: Any = None) -> Path:
    """A folder holding every sample file: ``local`` when it has them all, else the cache.

    Parameters
    ----------
    local : path, optional
        A local copy to prefer (e.g. a checkout's ``../shared/data``); used when it holds every
        registered file (hashes are not checked here: see :func:`verify`).
    downloader : callable, optional
        Passed to :func:`fetch`.

    Returns
    -------
    Path
        ``local``, or the cache folder once every file is fetched.
    """
    if local is not None:
        root = Path(local)
        if all((root / name).is_file() for name in REGISTRY):
            return root
        if root.exists():
            logger.warning("%s lacks some sample files; using the tilefuse.data cache", root)
    return fetch_all(downloader=downloader)


def verify(root: str | os.PathLike[str]) -> dict[str, str]:
    """Check files under ``root`` against the registry.

    Parameters
    ----------
    root : path
        A folder with the sample layout.

    Returns
    -------
    dict
        ``{name: problem}`` for every missing file or SHA-256 mismatch (empty when all match).
    """
    import hashlib

    problems = {}
    for name, f in REGISTRY.items():
        path = Path(root) / name
        if not path.is_file():
            problems[name] = "missing"
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != f.sha256:
            problems[name] = f"sha256 {digest}, expected {f.sha256} ({f.url})"
    return problems
