"""tests/interop: the sidecar's real binary against the emulator, its output read by the
parsers and the provider its users run. Shares the emulator harness of tests/contract."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract"))
