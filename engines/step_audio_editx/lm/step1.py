"""Native Step1 (``model_type "step1"``): StepFun's decoder-only LM behind Step-Audio-EditX.

Exact to the official remote code (same state-dict keys, same math), without executing it:
Llama-style pre-norm blocks (RMSNorm, SwiGLU MLP, no biases), grouped-query attention with NO RoPE and
a sqrt-ALiBi bias (``attention.py``), and an lm_head that is never tied to the embedding.

What changes against the official code: the bias is built once per forward from positions (not as a
full square in every layer at every step), ``attention_mask`` is honoured (left-padded rows equal their
unpadded selves), ``attn_implementation`` picks eager / sdpa / flex_attention / xformers, the KV cache
holds standard ``[B, G, K, D]`` tensors (DynamicCache and StaticCache both work), and the model runs
on transformers 4.56 through 5.x (``cache=`` and the older ``past_key_values=`` are both accepted).

Inputs: token ids ``[B, T]`` (text ids and audio ids 65536 + code share one vocabulary), an optional
2-D padding mask ``[B, past + T]``. Outputs: logits ``[B, T, vocab]`` in the model dtype.

For fast decoding (static buffers, CUDA graphs) the layers also take a precomputed ``attention_bias``
and preallocated per-layer ``kv_buffers`` written in place at ``kv_write_index`` (see
``Step1Model.allocate_kv_buffers``); nothing inside a layer branches on data or syncs with the host.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ..constants import BOS_ID, EOT_ID, PAD_ID, TEXT_VOCAB_SIZE
from .attention import (
    STEP1_ATTENTION_BACKENDS,
    Step1AttentionBias,
    Step1AttentionError,
    make_attention_bias,
    register_xformers,
    step1_attention,
)
from .quant.linear import restore_stored_words_

logger = logging.getLogger(__name__)

# transformers 5.x calls the KV cache field of its outputs ``cache``; 4.x calls it ``past_key_values``.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

KVBuffers = Sequence[tuple[torch.Tensor, torch.Tensor]]
DECODE_STATE_ATTR = "_decode_state"  # generation.py keeps the model's fast-decoding session here


class Step1ConfigError(ValueError):
    """A Step1 config whose dimensions cannot describe a Step1 model."""


class Step1Config(PretrainedConfig):
    """Step1 hyper-parameters, read from the official ``config.json`` (defaults: the full-size EditX model).

    ``tie_word_embeddings`` is always False: the official checkpoint stores a separate ``lm_head.weight``
    and its config may omit the key, which transformers >= 4.54 would read as "tie" (humming audio).
    """

    model_type = "step1"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    attribute_map = {"num_key_value_heads": "num_attention_groups", "max_position_embeddings": "max_seq_len"}

    def __init__(
        self,
        hidden_size: int = 3072,
        intermediate_size: int = 8192,
        num_attention_heads: int = 48,
        num_attention_groups: int = 4,
        num_hidden_layers: int = 32,
        max_seq_len: int = 4096,
        vocab_size: int = TEXT_VOCAB_SIZE,
        rms_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        bos_token_id: int = BOS_ID,
        eos_token_id: int = EOT_ID,
        pad_token_id: int = PAD_ID,
        tie_word_embeddings: bool = False,
        **kwargs,
    ) -> None:
        head_dim = kwargs.pop("head_dim", None)
        if hidden_size % num_attention_heads:
            raise Step1ConfigError(
                f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}; "
                "check the model folder's config.json."
            )
        if num_attention_heads % num_attention_groups:
            raise Step1ConfigError(
                f"num_attention_heads {num_attention_heads} is not a multiple of num_attention_groups "
                f"{num_attention_groups}; check the model folder's config.json."
            )
        if head_dim is not None and head_dim != hidden_size // num_attention_heads:
            raise Step1ConfigError(
                f"head_dim {head_dim} != hidden_size / num_attention_heads = {hidden_size // num_attention_heads}; "
                "Step1 has no separate head_dim: check the model folder's config.json."
            )
        if tie_word_embeddings:
            logger.warning("config.json asks for tie_word_embeddings=true; Step1's lm_head is always separate, "
                           "so it stays untied")
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_attention_heads = num_attention_heads
        self.num_attention_groups = num_attention_groups
        self.head_dim = hidden_size // num_attention_heads
        self.num_hidden_layers = num_hidden_layers
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=False,
            **kwargs,
        )


class Step1RMSNorm(nn.Module):
    """``x * rsqrt(mean(x.float()^2) + eps)`` (factor cast back to x's dtype), then ``* weight``; [..., hidden]."""

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return x * torch.rsqrt(variance + self.eps).to(x.dtype) * self.weight


class Step1MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``; [..., hidden] -> [..., hidden]."""

    def __init__(self, config: Step1Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class Step1Attention(nn.Module):
    """Grouped-query self-attention with the shared sqrt-ALiBi bias; [B, T, hidden] -> [B, T, hidden]."""

    def __init__(self, config: Step1Config, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_groups = config.num_attention_groups
        self.head_dim = config.head_dim
        self.scaling = self.head_dim ** -0.5
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, self.num_groups * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, self.num_groups * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: Step1AttentionBias,
        cache: Cache | None = None,
        cache_kwargs: dict | None = None,
        kv_buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_write_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``kv_buffers``: preallocated (keys, values) ``[B, G, L, D]`` written in place at ``kv_write_index``
        ``[T]`` (slot of each new token); attention then reads all L slots. Otherwise ``cache`` (a transformers
        Cache) is updated and read. ``attention_bias`` must describe the key slots attention reads."""
        batch, length, _ = hidden_states.shape
        query = self.q_proj(hidden_states).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(hidden_states).view(batch, length, self.num_groups, self.head_dim).transpose(1, 2)
        value = self.v_proj(hidden_states).view(batch, length, self.num_groups, self.head_dim).transpose(1, 2)
        if kv_buffers is not None:
            key_buffer, value_buffer = kv_buffers
            key_buffer.index_copy_(2, kv_write_index, key)
            value_buffer.index_copy_(2, kv_write_index, value)
            key, value = key_buffer, value_buffer
        elif cache is not None:
            key, value = cache.update(key, value, self.layer_idx, cache_kwargs)
        out = step1_attention(self.config._attn_implementation, query, key, value, attention_bias, self.scaling)
        return self.o_proj(out.reshape(batch, length, self.num_heads * self.head_dim))


class Step1DecoderLayer(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``; [B, T, hidden] -> [B, T, hidden]."""

    def __init__(self, config: Step1Config, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Step1Attention(config, layer_idx)
        self.mlp = Step1MLP(config)
        self.input_layernorm = Step1RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = Step1RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: Step1AttentionBias,
        cache: Cache | None = None,
        cache_kwargs: dict | None = None,
        kv_buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_write_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(
            self.input_layernorm(hidden_states), attention_bias, cache, cache_kwargs, kv_buffers, kv_write_index
        )
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


def _backend_error(requested: str) -> Step1AttentionError:
    if "flash" in requested:
        why = ("flash-attn's linear alibi_slopes cannot express Step1's sqrt-ALiBi bias, so no flash kernel "
               "computes this model exactly.")
    else:
        why = "Step1's sqrt-ALiBi attention is implemented for a fixed set of backends only."
    return Step1AttentionError(
        f"attn_implementation={requested!r} cannot run Step1: {why} Use one of "
        f"{', '.join(STEP1_ATTENTION_BACKENDS)} (or 'auto' in load_step1)."
    )


class Step1PreTrainedModel(PreTrainedModel):
    """Shared transformers plumbing: config class, supported attention backends, weight init."""

    config_class = Step1Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Step1DecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = False
    _supports_flash_attn_2 = False
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = False
    _supports_cache_class = True
    _supports_static_cache = True
    # generate() must not auto-compile this forward: the fast path (static buffers) compiles its own.
    _can_compile_fullgraph = False

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """Every layer reads ``config._attn_implementation`` at call time, so switching it live is safe."""
        return True

    def _check_and_adjust_attn_implementation(self, attn_implementation: str | None, *args, **kwargs) -> str:
        """Refuse backends that cannot express sqrt-ALiBi (flash_attention_*, hub kernels) with a clear error."""
        if attn_implementation is not None:
            if attn_implementation not in STEP1_ATTENTION_BACKENDS:
                raise _backend_error(attn_implementation)
            if attn_implementation == "xformers" and not register_xformers():
                raise Step1AttentionError(
                    "attn_implementation='xformers' needs the xformers package (pip install "
                    "'comfyui-step-audio-editx[xformers]'); use 'sdpa' instead."
                )
        return super()._check_and_adjust_attn_implementation(attn_implementation, *args, **kwargs)


def _static_cache_length(cache: Cache) -> int | None:
    """The allocated key length of a static (compileable) cache, or None for a growing one."""
    if not getattr(cache, "is_compileable", False):
        return None
    layers = getattr(cache, "layers", None) or []
    length = getattr(layers[0], "max_cache_len", None) if layers else None
    if length is None:
        raise Step1AttentionError(f"Unsupported cache type {type(cache).__name__}: its key length is unknown.")
    return int(length)


class Step1Model(Step1PreTrainedModel):
    """Embedding, decoder layers, final norm: ids ``[B, T]`` -> normed hidden states ``[B, T, hidden]``.

    ``sdpa_gqa`` (attribute): how the sdpa backend meets grouped K/V; None = ``attention.default_sdpa_gqa``
    (a group's query heads folded onto the query axis), one of ``attention.SDPA_GQA_MODES`` forces it.
    """

    def __init__(self, config: Step1Config) -> None:
        super().__init__(config)
        config = self.config  # the object transformers keeps (and updates on set_attn_implementation)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Step1DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Step1RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.sdpa_gqa: str | None = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def allocate_kv_buffers(self, batch_size: int, max_length: int, device: torch.device | str | None = None,
                            dtype: torch.dtype | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Zeroed per-layer (keys, values) ``[B, G, max_length, D]`` for ``forward(kv_buffers=...)``."""
        weight = self.embed_tokens.weight
        shape = (batch_size, self.config.num_attention_groups, max_length, self.config.head_dim)
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        return [(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
                for _ in range(self.config.num_hidden_layers)]

    def make_attention_bias(self, attention_mask: torch.Tensor | None, query_length: int,
                            past_length: int | torch.Tensor, kv_length: int, device: torch.device,
                            dtype: torch.dtype) -> Step1AttentionBias:
        """The per-forward attention inputs for this model's backend (see ``attention.make_attention_bias``)."""
        return make_attention_bias(self.config._attn_implementation, self.config.num_attention_heads,
                                   attention_mask, query_length, past_length, kv_length, device, dtype,
                                   sdpa_gqa=self.sdpa_gqa)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        attention_bias: Step1AttentionBias | None = None,
        kv_buffers: KVBuffers | None = None,
        kv_write_index: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        """Run the decoder. ``position_ids`` is accepted for generate() but not read: sqrt-ALiBi needs only
        distances, which the padding mask and the cache offset define (they equal generate()'s positions for
        every real token). For other positions pass a prebuilt ``attention_bias``."""
        if cache is None:
            cache = past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        query_length = inputs_embeds.shape[1]
        device = inputs_embeds.device
        if kv_buffers is not None:
            if kv_write_index is None:
                raise ValueError("kv_buffers needs kv_write_index (the slot of each new token).")
            cache, use_cache = None, False
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache()
        if kv_buffers is not None:
            past_length, kv_length = kv_write_index[0], kv_buffers[0][0].shape[2]
        elif cache is not None:
            static_length = _static_cache_length(cache)
            if static_length is None:
                past_length = int(cache.get_seq_length())
                kv_length = past_length + query_length
            else:
                past_length = cache_position[0] if cache_position is not None else cache.get_seq_length()
                past_length = past_length.clone() if isinstance(past_length, torch.Tensor) else past_length
                kv_length = static_length
            if cache_position is None:  # transformers 4.x static layers write at cache_position
                cache_position = torch.arange(query_length, device=device) + past_length
        else:
            past_length, kv_length = 0, query_length
        if attention_bias is None:
            attention_bias = self.make_attention_bias(attention_mask, query_length, past_length, kv_length,
                                                      device, inputs_embeds.dtype)
        cache_kwargs = {"cache_position": cache_position}

        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        all_hidden: tuple[torch.Tensor, ...] | None = () if output_hidden_states else None
        hidden_states = inputs_embeds
        for index, layer in enumerate(self.layers):
            if all_hidden is not None:
                all_hidden += (hidden_states,)
            hidden_states = layer(hidden_states, attention_bias, cache, cache_kwargs,
                                  None if kv_buffers is None else kv_buffers[index], kv_write_index)
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:  # as the official code: the last entry is the normed output
            all_hidden += (hidden_states,)
        output = BaseModelOutputWithPast(last_hidden_state=hidden_states, hidden_states=all_hidden,
                                         **{_CACHE_FIELD: cache if use_cache else None})
        return_dict = getattr(self.config, "return_dict", True) if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()


class Step1ForCausalLM(Step1PreTrainedModel, GenerationMixin):
    """Step1 with its (untied) lm_head: ids ``[B, T]`` -> logits ``[B, T, vocab]``; works with ``generate()``."""

    def __init__(self, config: Step1Config) -> None:
        super().__init__(config)
        config = self.config
        self.model = Step1Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_decoder(self) -> Step1Model:
        return self.model

    def set_decoder(self, decoder: Step1Model) -> None:
        self.model = decoder

    def release_decode_state(self) -> None:
        """Drop cached fast-decoding state (static KV cache, CUDA graphs; see ``generation.py``): it belongs
        to the weights' current placement. The next fast generate() rebuilds it."""
        state = self.__dict__.pop(DECODE_STATE_ATTR, None)
        if state is not None:
            state.release()

    def _apply(self, fn, *args, **kwargs):
        """``to()`` / ``cuda()`` / ``half()`` ... replace the weights: drop the decode state first, and give
        tinygemm-laid int4 projections their stored words back (that layout lives on one GPU)."""
        self.release_decode_state()
        restore_stored_words_(self)
        return super()._apply(fn, *args, **kwargs)

    def create_masks_for_generate(self, *args, attention_mask: torch.Tensor | None = None, **kwargs):
        """generate() asks for a 4-D mask when the cache is static; Step1 builds its bias from the 2-D mask."""
        return attention_mask

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        attention_bias: Step1AttentionBias | None = None,
        kv_buffers: KVBuffers | None = None,
        kv_write_index: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """``logits_to_keep``: 0 = all positions, n > 0 = the last n, or a tensor of positions to keep."""
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states,
            return_dict=True, cache_position=cache_position, attention_bias=attention_bias,
            kv_buffers=kv_buffers, kv_write_index=kv_write_index,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            kept = hidden_states[:, -logits_to_keep:] if logits_to_keep > 0 else hidden_states
        else:
            kept = hidden_states[:, logits_to_keep]
        logits = self.lm_head(kept)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        output = CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        **{_CACHE_FIELD: getattr(outputs, _CACHE_FIELD)})
        return_dict = getattr(self.config, "return_dict", True) if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()


_CANONICAL_PACKAGE = "comfyui_step_audio_editx."


def register_step1() -> None:
    """Make ``model_type "step1"`` load with the Auto classes without remote code (idempotent).

    The pack can be imported under a second name too (ComfyUI imports the folder by its directory name;
    pytest imports the repository root as a package): such an alias copy never replaces a registration
    made by the installed package name, so ``isinstance(AutoConfig..., Step1Config)`` holds there.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    existing = CONFIG_MAPPING[Step1Config.model_type] if Step1Config.model_type in CONFIG_MAPPING else None
    if (existing is not None and existing is not Step1Config
            and existing.__module__.startswith(_CANONICAL_PACKAGE)
            and not Step1Config.__module__.startswith(_CANONICAL_PACKAGE)):
        return
    AutoConfig.register(Step1Config.model_type, Step1Config, exist_ok=True)
    AutoModel.register(Step1Config, Step1Model, exist_ok=True)
    AutoModelForCausalLM.register(Step1Config, Step1ForCausalLM, exist_ok=True)


register_step1()
