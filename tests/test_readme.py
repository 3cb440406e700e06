"""Every Python and shell block of the README runs, as a newcomer would run it.

Each fenced block of README.md is preceded by a directive, ``<!-- test: KIND NAME -->``:

- ``python NAME``: the block runs as a script, after a prelude that fills in what the
  README leaves to the reader (a model, a ``train_one_epoch``) and before an epilogue
  that checks what it did;
- ``shell NAME``: each command runs in turn in bash; a command that serves (``pbtkit
  serve``, a worker, TensorBoard) starts in the background and must come up;
- ``file NAME``: the block is a file (a config, a client script) written under that name
  and checked (parsed, compiled);
- ``skip NAME``: not run here, for the reason :data:`FILLS` gives.

:data:`FILLS` holds what the test adds to each block: the folder it runs in (blocks that
share a folder see each other's files, in README order), the set-ups it needs, a prelude,
an epilogue and replacements (every text a replacement names must still be in the block,
so the README cannot drift from the test). A block without a directive, a directive
without an entry and an entry without a block all fail.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, free_port

README = ROOT / "README.md"
_BLOCK = re.compile(
    r"(?:<!--\s*test:\s*(?P<kind>\w+)\s+(?P<name>[\w.-]+)\s*-->\n)?"
    r"^```(?P<lang>\w*)\n(?P<text>.*?)^```",
    re.S | re.M,
)


@dataclass(frozen=True)
class Block:
    kind: str
    name: str
    lang: str
    text: str
    line: int


def readme_blocks() -> list[Block]:
    page = README.read_text(encoding="utf-8")
    return [
        Block(
            m["kind"] or "",
            m["name"] or "",
            m["lang"],
            m["text"],
            page[: m.start("lang")].count("\n") + 1,
        )
        for m in _BLOCK.finditer(page)
    ]


@dataclass(frozen=True)
class Fill:
    """What the test adds to one README block."""

    folder: str = ""
    setup: tuple[str, ...] = ()
    prelude: str = ""
    epilogue: str = ""
    replace: Mapping[str, str] = field(default_factory=dict)
    #: shell commands (by prefix) that keep running, and how to know they are up:
    #: "health" (GET /health on the session's port), "tensorboard" (its page), "alive"
    background: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""  # why a skipped block is not run here


# What the README leaves to the reader ------------------------------------------------

_TORCH_HELPERS = """
import torch
from torch import nn

_X = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
_Y = (_X[:, 0] > 0).long()

class Net(nn.Module):
    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(32, 2))

    def forward(self, x):
        return self.layers(x)

def train_epoch(model, opt, batch_size):
    model.train()
    device = next(model.parameters()).device
    for i in range(0, len(_X), batch_size):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(_X[i:i + batch_size].to(device)),
                                           _Y[i:i + batch_size].to(device))
        loss.backward()
        opt.step()
    return float(loss)

def evaluate(model):
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        return float((model(_X.to(device)).argmax(1).cpu() == _Y).float().mean())
"""

_LIGHTNING_HELPERS = """
import pbtkit as pk
import torch
from torch import nn
import lightning as L

class LitNet(L.LightningModule):
    def __init__(self, dropout: float, lr: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(32, 2))
        self.lr = lr

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

class DigitsData(L.LightningDataModule):
    def __init__(self, batch_size: int) -> None:
        super().__init__()
        x = torch.randn(256, 16, generator=torch.Generator().manual_seed(0))
        self.data = torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long())
        self.batch_size = batch_size

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=self.batch_size)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=256)
"""

_NUMPY_HELPERS = '''
import numpy as np

def sgd_step(weights, lr):
    """A step of gradient descent on |w - 1|^2."""
    grad = 2 * (weights - 1.0)
    weights = weights - min(lr, 0.4) * grad
    return weights, float(np.sum((weights - 1.0) ** 2))

def evaluate(weights):
    return float(np.exp(-np.sum((weights - 1.0) ** 2)))
'''

_RESULT = 'import pbtkit as pk\nresult = pk.Result.load("sqlite:///pbt-demo/pbt.db", "toy")\n'

# Checked by the script that ran it only: the workers import the script as a module.
_CHECK_RUN = """
if __name__ == "__main__":
    import pbtkit as _pk
    _done = _pk.Result.load("sqlite:///{db}", "{name}")
    assert _done.status == "finished", _done.status
    assert all(m.status == "done" for m in _done.members), _done.members
"""

_REMOTE = """
import os, subprocess, sys, time
import pbtkit as pk
from pbtkit import PBTServer
from mypackage.train import train

_server = PBTServer(0, "change-me", storage="sqlite:///server.db")
SERVER = _server.url
_worker = subprocess.Popen([sys.executable, "-m", "pbtkit", "worker", "mypackage.train:train",
                            "--server", SERVER], env={**os.environ, "PBTKIT_AUTH_KEY": "change-me"})
os.environ["PBTKIT_AUTH_KEY"] = "change-me"
SETTINGS = dict(space={"lr": pk.LogUniform(1e-4, 1e-1)}, metric="accuracy", population=4,
                ready_every=100, total_steps=300, name="remote", progress=False)
"""

_LOGGERS = """
import pbtkit as pk
from mypackage.train import train
SETTINGS = dict(space={"lr": pk.LogUniform(1e-4, 1e-1)}, metric="accuracy", population=2,
                workers=1, ready_every=100, total_steps=200, storage="sqlite:///loggers.db",
                name="loggers", progress=False)
"""

_WEIGHTS = """
from pathlib import Path
import numpy as np
for _folder in ("weights-at-step-1000", "weights-at-1000"):
    Path(_folder).mkdir(exist_ok=True)
    np.save(Path(_folder) / "weights.npy", np.full(10, 0.5))
"""

FILLS: dict[str, Fill] = {
    "make": Fill(
        reason="make demo and make test install a virtual environment: tests/test_demo.py "
        "runs the demo's install and run from a clean copy, and CI runs make test itself",
    ),
    "torch": Fill(
        folder="torch",
        prelude=_TORCH_HELPERS,
        replace={
            "population=8, workers=2, ready_every=2, total_steps=16": (
                "population=4, workers=2, ready_every=1, total_steps=2, progress=False"
            )
        },
        epilogue=_CHECK_RUN.format(db="pbt.db", name="train"),
    ),
    "vectorized": Fill(
        folder="vectorized",
        prelude="""
import torch
_g = torch.Generator().manual_seed(0)
_x = torch.randn(320, 16, generator=_g)
_y = (_x[:, :4]).argmax(dim=1)
batches = [(_x[i : i + 32], _y[i : i + 32]) for i in range(0, 256, 32)]
x_val, y_val = _x[256:], _y[256:]
""",
        replace={
            "population=32, ready_every=50, total_steps=500": (
                "population=4, ready_every=5, total_steps=10, storage='sqlite:///pbt.db'"
            )
        },
        epilogue=_CHECK_RUN.format(db="pbt.db", name="vectorized"),
    ),
    "lightning": Fill(
        folder="lightning",
        prelude=_LIGHTNING_HELPERS,
        epilogue="""
if __name__ == "__main__":
    result = pk.run(train, space={"dropout": pk.Uniform(0, 0.5), "lr": pk.LogUniform(1e-3, 0.1),
                                  "batch_size": pk.Ordinal((32, 64))},
                    metric="val_acc", population=2, workers=1, ready_every=1, total_steps=2,
                    executor="thread", progress=False)
    assert all(m.status == "done" and m.step == 2 for m in result.members), result.members
""",
    ),
    "numpy": Fill(
        folder="numpy",
        prelude=_NUMPY_HELPERS,
        epilogue=_CHECK_RUN.format(db="pbt.db", name="train"),
    ),
    "conditional": Fill(
        folder="conditional",
        prelude="import numpy as np\nimport pbtkit as pk\n",
        epilogue="""
_space = pk.SearchSpace(space)
for _seed in range(20):
    _values = _space.sample(np.random.default_rng(_seed))
    assert ("momentum" in _values) == (_values["optimizer"] == "sgd"), _values
    assert ("width3" in _values) == (_values["layers"] >= 3), _values
""",
    ),
    "command-line": Fill(
        folder="cli",
        setup=("mypackage", "file:pbt.toml"),
        background={"pbtkit serve": "health", "pbtkit worker": "alive"},
    ),
    "pbt.toml": Fill(folder="cli"),
    "plot": Fill(folder="demo", setup=("demo",)),
    "viz": Fill(folder="demo", setup=("demo",), prelude=_RESULT),
    "tensorboard": Fill(
        folder="demo",
        setup=("demo",),
        replace={"pbt-demo/tensorboard": "pbt-demo/tensorboard --port {port2} --host 127.0.0.1"},
        background={"tensorboard": "tensorboard"},
    ),
    "loggers": Fill(
        folder="loggers",
        setup=("mypackage",),
        prelude=_LOGGERS,
        replace={"pk.run(train, ..., ": "pk.run(train, **SETTINGS, "},
        epilogue=_CHECK_RUN.format(db="loggers.db", name="loggers"),
    ),
    "export": Fill(folder="demo", setup=("demo",)),
    "dataframe": Fill(
        folder="demo",
        setup=("demo",),
        prelude=_RESULT,
        epilogue='\nassert len(trials) == len(result.trials) and "hparams.h0" in trials\n',
    ),
    "replay": Fill(
        folder="cli",
        prelude="import pbtkit as pk\nfrom mypackage.train import train\n" + _WEIGHTS,
        epilogue="\nassert out.metrics['accuracy'] > 0 and part.metrics['accuracy'] > 0\n",
    ),
    "replay-command": Fill(folder="cli", setup=("weights",)),
    "serve": Fill(
        folder="serve",
        setup=("mypackage",),
        replace={"/shared/ckpt": "shared/ckpt", "pbt-host": "127.0.0.1"},
        background={"pbtkit serve": "health", "pbtkit worker": "alive"},
    ),
    "remote-run": Fill(
        folder="remote",
        setup=("mypackage",),
        prelude=_REMOTE,
        replace={'"http://pbt-host:8765"': "SERVER", "...": "**SETTINGS"},
        epilogue="""
_worker.terminate()
_worker.wait()
_server.shutdown()
assert result.status == "finished" and len(result.members) == 4, result
""",
    ),
    "pbt.yaml": Fill(folder="glassbox"),
    "client.py": Fill(
        folder="glassbox",
        prelude='''
import numpy as np

def train_one_epoch(weights, hp):
    """Stands for your training: a step towards 1, as fast as the learning rate allows."""
    weights = weights + min(hp["lr"] * 10, 1.0) * (1.0 - weights)
    return weights, float(np.exp(-np.sum((weights - 1.0) ** 2)))
''',
    ),
    "glassbox": Fill(
        folder="glassbox",
        epilogue="""
import pbtkit as pk
_done = pk.Result.load("sqlite:///pbt-server.db", "glassbox")
assert len(_done.members) == 4 and all(m.step == 10 for m in _done.members), _done.members
""",
    ),
}


# The session: one folder per group of blocks, set up once --------------------------------


@dataclass
class Session:
    base: Path
    env: dict[str, str]
    ports: dict[str, int]
    ready: set[tuple[str, str]] = field(default_factory=set)

    def folder(self, name: str) -> Path:
        path = self.base / name
        path.mkdir(exist_ok=True)
        return path

    def run(self, args: list[str], cwd: Path, timeout: float = 600) -> None:
        out = subprocess.run(
            args,
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert out.returncode == 0, f"{args} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"

    def set_up(self, folder: str, what: str) -> None:
        if (folder, what) in self.ready:
            return
        here = self.folder(folder)
        if what == "mypackage":
            # "the training function of the section above in mypackage/train.py"
            (here / "mypackage").mkdir(exist_ok=True)
            (here / "mypackage" / "__init__.py").write_text("")
            (here / "mypackage" / "train.py").write_text(_NUMPY_HELPERS + _text_of("numpy"))
        elif what.startswith("file:"):
            name = what.partition(":")[2]
            (here / name).write_text(_text_of(name))
        elif what == "demo":
            # The two experiments of `make demo`, the digits one smaller.
            self.run(
                [
                    sys.executable,
                    "-c",
                    "from pbtkit.examples import digits, toy\n"
                    "toy.main('pbt-demo', progress=False, tensorboard=True)\n"
                    "digits.main('pbt-demo', progress=False, tensorboard=True, population=4,"
                    " total_steps=4)\n",
                ],
                here,
            )
        elif what == "weights":  # the weights at step 1000 a user kept from a replay
            self.run([sys.executable, "-c", _WEIGHTS], here)
        else:  # pragma: no cover - a misspelled set-up
            raise AssertionError(f"no set-up {what!r}")
        self.ready.add((folder, what))


def _text_of(name: str) -> str:
    [block] = [b for b in readme_blocks() if b.name == name]
    return block.text


def _filled(block: Block, fill: Fill, session: Session) -> str:
    text = block.text
    for old, new in fill.replace.items():
        assert old in text, f"README block {block.name!r} no longer contains {old!r}"
        text = text.replace(old, new.format(**session.ports))
    return text.replace("8765", str(session.ports["port"]))


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    base = tmp_path_factory.mktemp("readme")
    bin_dir = Path(sys.executable).parent
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "PYTHONPATH": str(ROOT / "src"),
        "HOME": str(base),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "MPLBACKEND": "Agg",
        "LANG": "C.UTF-8",
    }
    return Session(base, env, {"port": free_port(), "port2": free_port()})


def _wait_up(process: subprocess.Popen[str], how: str, session: Session) -> None:
    if how == "alive":
        time.sleep(3)
        assert process.poll() is None, f"it exited with {process.returncode}"
        return
    port = session.ports["port" if how == "health" else "port2"]
    url = f"http://127.0.0.1:{port}" + ("/health" if how == "health" else "/")
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, f"it exited with {process.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer"
        time.sleep(0.2)


def _commands(text: str) -> list[str]:
    joined = text.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def _run_shell(block: Block, fill: Fill, session: Session, here: Path) -> None:
    running: list[subprocess.Popen[str]] = []
    try:
        for command in _commands(_filled(block, fill, session)):
            export = re.match(r"export (\w+)=(\S+)", command)
            if export:
                session.env[export[1]] = export[2]
                continue
            how = next((h for p, h in fill.background.items() if command.startswith(p)), None)
            if how is None:
                session.run(["bash", "-c", command], here)
                continue
            process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=here,
                env=session.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            running.append(process)
            try:
                _wait_up(process, how, session)
            except AssertionError as exc:
                process.kill()
                raise AssertionError(f"{command!r}: {exc}\n{process.communicate()[1]}") from None
    finally:
        for process in reversed(running):
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _check_file(name: str, path: Path) -> None:
    if name.endswith(".toml"):
        from pbtkit.config import load_config, run_kwargs

        run_kwargs(load_config(path))
    elif name.endswith((".yaml", ".yml")):
        from pbtkit.config import read_settings
        from pbtkit.service.glassbox import glassbox_spec

        glassbox_spec(read_settings(path), True)
    elif name.endswith(".py"):
        compile(path.read_text(), str(path), "exec")


# The tests --------------------------------------------------------------------------------


def test_every_block_has_a_directive_and_every_directive_a_fill() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= 15
    bare = [f"line {b.line}" for b in blocks if not b.kind]
    assert not bare, f"README blocks without a <!-- test: KIND NAME --> line: {bare}"
    assert {b.kind for b in blocks} <= {"python", "shell", "file", "skip"}
    names = [b.name for b in blocks]
    assert len(names) == len(set(names)), f"a name is used twice: {names}"
    assert set(names) == set(FILLS), (
        f"without a fill: {sorted(set(names) - set(FILLS))}; "
        f"fills without a block: {sorted(set(FILLS) - set(names))}"
    )
    for block in blocks:
        if block.kind == "skip":
            assert FILLS[block.name].reason, f"say why {block.name!r} is not run"
        if block.kind == "python":
            assert block.lang == "python", block
        if block.kind == "shell":
            assert block.lang == "bash", block


_RUN = [b for b in readme_blocks() if b.kind in ("python", "shell", "file") and b.name in FILLS]


@pytest.mark.slow
@pytest.mark.parametrize("block", _RUN, ids=[f"{b.line}-{b.name}" for b in _RUN])
def test_the_readme_block_runs(block: Block, session: Session) -> None:
    fill = FILLS[block.name]
    here = session.folder(fill.folder)
    for what in fill.setup:
        session.set_up(fill.folder, what)
    if block.kind == "file":
        path = here / block.name
        path.write_text(fill.prelude + _filled(block, fill, session))
        _check_file(block.name, path)
    elif block.kind == "python":
        script = here / f"readme_{block.name.replace('-', '_')}.py"
        script.write_text(fill.prelude + "\n" + _filled(block, fill, session) + fill.epilogue)
        session.run([sys.executable, script.name], here)
    else:
        _run_shell(block, fill, session, here)
