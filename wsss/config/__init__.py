"""An experiment's config: the schema (:mod:`wsss.config.schema`, every section and key) and
its loading (:mod:`wsss.config.load`: YAML, ``_base_``, overrides, validation)."""
from wsss.config.load import (CLI, RENAMED, apply_overrides, build_config, config_from_dict, dump_config, load_config,
                              load_yaml_tree, method_sections, read_yaml_mapping, save_config, to_dict)
from wsss.config.schema import (BACKBONES, AugConfig, Backbone, CamConfig, Config, CRFConfig, DataConfig, EvalCamConfig,
                                IRNConfig, ModelConfig, PipelineConfig, PretrainConfig, PseudoConfig, RuntimeConfig,
                                ScheduleConfig, SegConfig, SyntheticConfig, TrainConfig)
from wsss.errors import ConfigError

__all__ = [
    "AugConfig", "BACKBONES", "Backbone", "CLI", "CRFConfig", "CamConfig", "Config", "ConfigError", "DataConfig",
    "EvalCamConfig", "IRNConfig", "ModelConfig", "PipelineConfig", "PretrainConfig", "PseudoConfig", "RENAMED", "RuntimeConfig",
    "ScheduleConfig", "SegConfig", "SyntheticConfig", "TrainConfig", "apply_overrides", "build_config",
    "config_from_dict", "dump_config", "load_config", "load_yaml_tree", "method_sections", "read_yaml_mapping",
    "save_config", "to_dict",
]
