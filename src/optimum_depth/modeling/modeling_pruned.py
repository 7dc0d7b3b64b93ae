"""Model classes of sublayer-pruned checkpoints (FinerCut), one thin class set per family.

This file and its siblings ``pruned_decoder.py`` (the generic decoder, see its docstring for the design),
``configuration_pruned.py``, ``pruned_layout.py`` and ``transformers_compat.py`` import only torch and transformers:
they are copied beside every sublayer-pruned checkpoint, so ``AutoModelForCausalLM.from_pretrained(path,
trust_remote_code=True)`` works where optimum_depth is not installed (with one warning when the installed
transformers lies outside the releases this code was tested with). With optimum_depth imported, the package's own
classes are registered with the Auto classes and no remote code is needed.
"""

from __future__ import annotations

from transformers import GenerationMixin
from transformers.models.gemma2.modeling_gemma2 import (
    Gemma2Attention,
    Gemma2MLP,
    Gemma2PreTrainedModel,
    Gemma2RMSNorm,
    Gemma2RotaryEmbedding,
    Gemma2TextScaledWordEmbedding,
)
from transformers.models.gemma3.modeling_gemma3 import (
    Gemma3Attention,
    Gemma3MLP,
    Gemma3PreTrainedModel,
    Gemma3RMSNorm,
    Gemma3RotaryEmbedding,
    Gemma3TextScaledWordEmbedding,
)
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaMLP,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.models.mistral.modeling_mistral import (
    MistralAttention,
    MistralMLP,
    MistralPreTrainedModel,
    MistralRMSNorm,
    MistralRotaryEmbedding,
)
from transformers.models.phi3.modeling_phi3 import (
    Phi3Attention,
    Phi3MLP,
    Phi3PreTrainedModel,
    Phi3RMSNorm,
    Phi3RotaryEmbedding,
)
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2Attention,
    Qwen2MLP,
    Qwen2PreTrainedModel,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)
from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3Attention,
    Qwen3MLP,
    Qwen3PreTrainedModel,
    Qwen3RMSNorm,
    Qwen3RotaryEmbedding,
)
from transformers.models.smollm3.modeling_smollm3 import (
    SmolLM3Attention,
    SmolLM3MLP,
    SmolLM3PreTrainedModel,
    SmolLM3RMSNorm,
    SmolLM3RotaryEmbedding,
)

from .configuration_pruned import (
    PrunedGemma2Config,
    PrunedGemma3TextConfig,
    PrunedLlamaConfig,
    PrunedMistralConfig,
    PrunedPhi3Config,
    PrunedQwen2Config,
    PrunedQwen3Config,
    PrunedSmolLM3Config,
)
from .pruned_decoder import PrunedCausalLM, PrunedDecoderLayer, PrunedDecoderModel, SublayerClasses
from .transformers_compat import warn_if_untested_transformers

__all__ = [
    "PRUNED_CAUSAL_LM_CLASSES",
    "PrunedCausalLM",
    "PrunedDecoderLayer",
    "PrunedDecoderModel",
    "SublayerClasses",
]

if not __name__.startswith("optimum_depth."):  # the copy beside a checkpoint, loaded with trust_remote_code
    warn_if_untested_transformers()


# ---------------------------------------------------------------------------------------------------- families
class PrunedLlamaPreTrainedModel(LlamaPreTrainedModel):
    config_class = PrunedLlamaConfig
    _no_split_modules = ["PrunedDecoderLayer"]
    _can_record_outputs = {"hidden_states": PrunedDecoderLayer, "attentions": LlamaAttention}


class PrunedLlamaModel(PrunedDecoderModel, PrunedLlamaPreTrainedModel):
    sublayer_classes = SublayerClasses(LlamaAttention, LlamaMLP, LlamaRMSNorm, LlamaRotaryEmbedding)


class PrunedLlamaForCausalLM(PrunedCausalLM, PrunedLlamaPreTrainedModel, GenerationMixin):
    decoder_class = PrunedLlamaModel


class PrunedMistralPreTrainedModel(MistralPreTrainedModel):
    config_class = PrunedMistralConfig
    _no_split_modules = ["PrunedDecoderLayer"]
    _can_record_outputs = {"hidden_states": PrunedDecoderLayer, "attentions": MistralAttention}


class PrunedMistralModel(PrunedDecoderModel, PrunedMistralPreTrainedModel):
    sublayer_classes = SublayerClasses(MistralAttention, MistralMLP, MistralRMSNorm, MistralRotaryEmbedding)


class PrunedMistralForCausalLM(PrunedCausalLM, PrunedMistralPreTrainedModel, GenerationMixin):
    decoder_class = PrunedMistralModel


class PrunedQwen2PreTrainedModel(Qwen2PreTrainedModel):
    config_class = PrunedQwen2Config
    _no_split_modules = ["PrunedDecoderLayer"]
    _can_record_outputs = {"hidden_states": PrunedDecoderLayer, "attentions": Qwen2Attention}


class PrunedQwen2Model(PrunedDecoderModel, PrunedQwen2PreTrainedModel):
    sublayer_classes = SublayerClasses(Qwen2Attention, Qwen2MLP, Qwen2RMSNorm, Qwen2RotaryEmbedding)


class PrunedQwen2ForCausalLM(PrunedCausalLM, PrunedQwen2PreTrainedModel, GenerationMixin):
    decoder_class = PrunedQwen2Model


class PrunedQwen3PreTrainedModel(Qwen3PreTrainedModel):
    config_class = PrunedQwen3Config
    _no_split_modules = ["PrunedDecoderLayer"]
    _can_record_outputs = {"hidden_states": PrunedDecoderLayer, "attentions": Qwen3Attention}


class PrunedQwen3Model(PrunedDecoderModel, PrunedQwen3PreTrainedModel):
    sublayer_classes = SublayerClasses(Qwen3Attention, Qwen3MLP, Qwen3RMSNorm, Qwen3RotaryEmbedding)


class PrunedQwen3ForCausalLM(PrunedCausalLM, PrunedQwen3PreTrainedModel, GenerationMixin):
    decoder_class = PrunedQwen3Model


class PrunedPhi3PreTrainedModel(Phi3PreTrainedModel):
    config_class = PrunedPhi3Config
    _no_split_modules = ["PrunedDecoderLayer"]
    _can_record_outputs = {"hidden_states": PrunedDecoderLayer, "attentions": Phi3Attention}


class PrunedPhi3Model(PrunedDecoderModel, PrunedPhi3PreTrainedModel):
    sublayer_classes = SublayerClasses(Phi3Attention, Phi3MLP, Phi3RMSNorm, Phi3RotaryEmbedding)


class PrunedPhi3ForCausalLM(PrunedCausalLM, PrunedPhi3PreTrainedModel, GenerationMixin):
    decoder_class = PrunedPhi3Model


class PrunedSmolLM3PreTrainedModel(SmolLM3PreTrainedModel):
    config_class = PrunedSmolLM3Config
    _no_split_modules = ["PrunedDecoderLayer"]
    _can_record_outputs = {"hidden_states": PrunedDecoderLayer, "attentions": SmolLM3Attention}


class PrunedSmolLM3Model(PrunedDecoderModel, PrunedSmolLM3PreTrainedModel):
    sublayer_classes = SublayerClasses(SmolLM3Attention, SmolLM3MLP, SmolLM3RMSNorm, SmolLM3RotaryEmbedding)


class PrunedSmolLM3ForCausalLM(PrunedCausalLM, PrunedSmolLM3PreTrainedModel, GenerationMixin):
    decoder_class = PrunedSmolLM3Model


class PrunedGemma2PreTrainedModel(Gemma2PreTrainedModel):
    config_class = PrunedGemma2Config
    _no_split_modules = ["PrunedDecoderLayer"]
    _can_record_outputs = {"hidden_states": PrunedDecoderLayer, "attentions": Gemma2Attention}


class PrunedGemma2Model(PrunedDecoderModel, PrunedGemma2PreTrainedModel):
    sublayer_classes = SublayerClasses(
        Gemma2Attention,
        Gemma2MLP,
        Gemma2RMSNorm,
        Gemma2RotaryEmbedding,
        embedding=Gemma2TextScaledWordEmbedding,
        sandwich_norms=True,
    )


class PrunedGemma2ForCausalLM(PrunedCausalLM, PrunedGemma2PreTrainedModel, GenerationMixin):
    decoder_class = PrunedGemma2Model


class PrunedGemma3TextPreTrainedModel(Gemma3PreTrainedModel):
    config_class = PrunedGemma3TextConfig
    input_modalities = ("text",)  # type: ignore[assignment]
    _no_split_modules = ["PrunedDecoderLayer"]
    _can_record_outputs = {"hidden_states": PrunedDecoderLayer, "attentions": Gemma3Attention}


class PrunedGemma3TextModel(PrunedDecoderModel, PrunedGemma3TextPreTrainedModel):
    sublayer_classes = SublayerClasses(
        Gemma3Attention,
        Gemma3MLP,
        Gemma3RMSNorm,
        Gemma3RotaryEmbedding,
        embedding=Gemma3TextScaledWordEmbedding,
        sandwich_norms=True,
        rotary_per_layer_type=True,
    )


class PrunedGemma3ForCausalLM(PrunedCausalLM, PrunedGemma3TextPreTrainedModel, GenerationMixin):
    decoder_class = PrunedGemma3TextModel


PRUNED_CAUSAL_LM_CLASSES: dict[str, type] = {
    cls.config_class.model_type: cls
    for cls in (
        PrunedLlamaForCausalLM,
        PrunedMistralForCausalLM,
        PrunedQwen2ForCausalLM,
        PrunedQwen3ForCausalLM,
        PrunedPhi3ForCausalLM,
        PrunedSmolLM3ForCausalLM,
        PrunedGemma2ForCausalLM,
        PrunedGemma3ForCausalLM,
    )
}
"""Pruned ``model_type`` (``"pruned_llama"``, ...) -> causal-LM class."""

for _model_class in PRUNED_CAUSAL_LM_CLASSES.values():
    # save_pretrained then writes `auto_map` and copies this file and its relative imports beside the weights.
    _model_class.config_class.register_for_auto_class()
    _model_class.register_for_auto_class("AutoModelForCausalLM")
