"""Read once, ask many: memory states on disk, reading and asking, and the HTTP server.

    state.py    the memory-state file format, pinned to the model that read it (ModelIdentity)
    reader.py   MemoryReader: text -> ids -> memory states -> answers (used by the CLI and server)
    store.py    the server's directory of memories
    api.py      request and response shapes (OpenAI-style)
    limits.py   request bounds, the one model worker thread, the request-body limit
    app.py      the FastAPI app and `serve`

Only state.py and reader.py are imported here: the server's modules import FastAPI.
"""

from rmt_scale.serving.reader import Completion, MemoryReader
from rmt_scale.serving.state import (
           ModelIdentity,
           StateInfo,
           load_state,
           read_state_info,
           save_state,
)

__all__ = ["Completion", "MemoryReader", "ModelIdentity", "StateInfo", "load_state", "read_state_info",
           "save_state"]
