"""The wheel: built once with `maturin build --release`, it holds the binary and the package and
installs where no Rust toolchain builds anything."""

import fcntl
import os
import subprocess
import sys
import zipfile

from conftest import REPO


def test_the_wheel_holds_the_binary_and_the_package_and_installs(tmp_path):
    out = tmp_path / "dist"
    lock = open(os.environ.get("POOLPARTY_BUILD_LOCK", str(tmp_path / "lock")), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # not while run.sh's pip install builds (target/maturin/)
    build = subprocess.run(["maturin", "build", "--release", "--out", str(out)], cwd=REPO,
                           capture_output=True, text=True)
    lock.close()
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = list(out.glob("poolparty-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    data = [n for n in names if n.endswith(".data/scripts/poolparty")]
    assert data, names
    for module in ("__init__", "__main__", "_pool", "_worker", "_binary", "_serialize"):
        assert f"poolparty/{module}.py" in names, names
    assert not [n for n in names if n.endswith(".so")], "no compiled Python extension"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(wheel)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert os.access(venv / "bin" / "poolparty", os.X_OK)
    version = subprocess.run([py, "-m", "poolparty", "--version"], capture_output=True, text=True,
                             cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "POOLPARTY_BIN"})
    assert version.returncode == 0 and "poolparty" in version.stdout, version
    run = subprocess.run([py, "-c", "import poolparty, json; "
                          "print(json.dumps(poolparty.Pool(work_dir='w').map(abs, [-1, -2])))"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[1, 2]"
    assert str(venv) in subprocess.run(
        [py, "-c", "import poolparty; print(poolparty.find_poolparty_bin())"],
        capture_output=True, text=True, cwd=tmp_path).stdout

    # The binary that came with the package is the one used; another poolparty found instead
    # (here: the package's own binary removed, an older one on PATH) is refused, naming both.
    version = subprocess.run([py, "-c", "import poolparty; print(poolparty.__version__)"],
                             capture_output=True, text=True, cwd=tmp_path).stdout.strip()
    assert version and wheel.name.startswith(f"poolparty-{version}-"), (version, wheel.name)
    fake = tmp_path / "old-bin"
    fake.mkdir()
    (fake / "poolparty").write_text("#!/bin/sh\necho 'poolparty 0.0.9'\n")
    (fake / "poolparty").chmod(0o755)
    os.rename(venv / "bin" / "poolparty", tmp_path / "moved-poolparty")
    env = {k: v for k, v in os.environ.items() if k != "POOLPARTY_BIN"}
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    found = subprocess.run([py, "-c", "import poolparty; poolparty.Pool(work_dir='w')"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert found.returncode != 0
    assert "VersionMismatchError" in found.stderr, found.stderr
    assert f"{fake / 'poolparty'}) is version 0.0.9" in found.stderr, found.stderr
    assert f"the Python package poolparty is version {version}" in found.stderr, found.stderr
    assert str(venv / "bin" / "poolparty") in found.stderr, "names the binary it came with"
    env["POOLPARTY_BIN"] = str(fake / "poolparty")
    named = subprocess.run([py, "-c", "import poolparty; poolparty.find_poolparty_bin()"],
                           capture_output=True, text=True, cwd=tmp_path, env=env)
    assert "named by POOLPARTY_BIN" in named.stderr and "version 0.0.9" in named.stderr, named.stderr
    # The right version found on PATH instead is fine.
    os.rename(tmp_path / "moved-poolparty", fake / "poolparty")
    del env["POOLPARTY_BIN"]
    ok = subprocess.run([py, "-c", "import poolparty; print(poolparty.find_poolparty_bin())"],
                        capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ok.returncode == 0 and ok.stdout.strip() == str(fake / "poolparty"), ok
