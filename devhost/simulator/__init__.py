"""A spec-accurate stand-in for Azure OpenAI, for tests, demos (`make run`) and benchmarks."""

from .app import create_app
from .config import SimulatorConfig
from .server import SimulatorHandle, run_in_thread, serve
from .state import LoggedRequest

__all__ = ["LoggedRequest", "SimulatorConfig", "SimulatorHandle", "create_app", "run_in_thread", "serve"]
