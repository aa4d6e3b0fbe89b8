"""The Pi0 / Pi0.5 model in JAX: configs, the Gemma mixture, sampling with attention capture, knockouts,
activation patches, gradients of an action target (attention maps, prefix embeddings)."""

from flowlens.model.capture_config import CaptureConfig as CaptureConfig
from flowlens.model.checkpoint import Checkpoint as Checkpoint
from flowlens.model.checkpoint import infer_config as infer_config
from flowlens.model.checkpoint import load_checkpoint as load_checkpoint
from flowlens.model.checkpoint import load_params as load_params
from flowlens.model.checkpoint import save_openpi_checkpoint as save_openpi_checkpoint
from flowlens.model.config import (
    CONFIGS as CONFIGS,
)
from flowlens.model.config import (
    GemmaConfig as GemmaConfig,
)
from flowlens.model.config import (
    Pi0Config as Pi0Config,
)
from flowlens.model.config import (
    SiglipConfig as SiglipConfig,
)
from flowlens.model.config import (
    get_config as get_config,
)
from flowlens.model.gradients import ActionTarget as ActionTarget
from flowlens.model.gradients import attention_gradients as attention_gradients
from flowlens.model.gradients import path_gradients as path_gradients
from flowlens.model.knockout import Knockout as Knockout
from flowlens.model.norm_stats import NormStats as NormStats
from flowlens.model.norm_stats import load_norm_stats as load_norm_stats
from flowlens.model.observation import Observation as Observation
from flowlens.model.patching import Patch as Patch
from flowlens.model.patching import RunRecord as RunRecord
from flowlens.model.patching import SamplerPatch as SamplerPatch
from flowlens.model.pi0 import Pi0Model as Pi0Model
from flowlens.model.preprocess import make_observation as make_observation
from flowlens.model.sampler import sample_actions as sample_actions
from flowlens.model.sampler import sample_patched as sample_patched
from flowlens.model.sampler import sample_with_knockouts as sample_with_knockouts
from flowlens.model.siglip import Siglip as Siglip
from flowlens.model.siglip import SiglipOutput as SiglipOutput
from flowlens.model.tokenizer import PaligemmaTokenizer as PaligemmaTokenizer
from flowlens.model.tokenizer import TokenizedPrompt as TokenizedPrompt
