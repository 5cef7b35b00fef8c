"""The Makefile's setup says what it does while it works: it takes minutes."""

import subprocess

from tests.conftest import ROOT


def test_setup_says_each_step_and_lets_pip_list_its_packages():
    planned = subprocess.run(["make", "-n", "-B", "setup"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    steps = [line for line in planned.splitlines() if line.startswith("echo \"setup ") and "/4:" in line]
    assert [line.split()[2] for line in steps] == ["1/4:", "2/4:", "3/4:", "4/4:"]
    installs = [line for line in planned.splitlines() if " install " in line]
    assert len(installs) == 3 and not any("--quiet" in line or " -q " in line for line in installs)


