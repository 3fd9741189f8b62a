"""The language model on a vLLM server (many ComfyUI workers, one shared GPU server); see docs/remote_lm.md.

``config`` (torch-free): ``RemoteLMConfig`` and the errors. ``client``: ``RemoteLM``, the engine's remote
backend. ``transport``: HTTP, SSE, retries, cancel. ``step_audio_vllm_plugin``: the logits processor the
server loads (vLLM is imported only on the server).
"""

from .config import *  # noqa: F401,F403 - RemoteLMConfig, remote_lm_config and the RemoteLM* errors
from .config import __all__  # noqa: F401
