"configs/accelerate/*.yaml: each file reads with accelerate's own loader and launcher, so a typo fails here."
import os
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_multi_gpu_env

DIR = Path(__file__).resolve().parents[1] / 'configs' / 'accelerate'
EXPECT = {  # file: (distributed type, processes)
    'single_gpu.yaml': (DistributedType.NO, 1),
    'ddp_8gpu.yaml': (DistributedType.MULTI_GPU, 8),
    'fsdp2_8gpu.yaml': (DistributedType.FSDP, 8),
    'fsdp2_offload.yaml': (DistributedType.FSDP, 1),
    'zero2.yaml': (DistributedType.DEEPSPEED, 8),
    'zero3.yaml': (DistributedType.DEEPSPEED, 8),
}


def test_the_files_are_the_documented_ones():
    assert sorted(p.name for p in DIR.glob('*.yaml')) == sorted(EXPECT)
    readme = (DIR / 'README.md').read_text()
    assert all(f'`{name}`' in readme for name in EXPECT)


def launch_args(path: Path):
    "The launcher's arguments after it has read and validated the file, as `accelerate launch` does."
    args = launch_command_parser().parse_args(['--config_file', str(path), 'train.py'])
    return _validate_launch_command(args)[0]


def flag_value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


@pytest.mark.parametrize('name', sorted(EXPECT))
def test_config_loads_and_validates(name):
    path = DIR / name
    c = load_config_from_file(str(path))   # unknown top-level keys raise
    kind, n = EXPECT[name]
    assert c.distributed_type == kind and c.num_processes == n and c.mixed_precision == 'bf16'
    parser = launch_command_parser()
    options = {a.dest: a for a in parser._actions}
    for key, value in {**c.fsdp_config, **c.deepspeed_config}.items():   # nested keys: each is a launch option
        assert key in options, f'{name}: {key!r} is not an accelerate launch option'
        parser.parse_args([f'--{key}', flag_value(value), 'train.py'])   # its type and choices accept the value
    args = launch_args(path)
    assert args.mixed_precision == 'bf16' and args.num_processes == n
    assert (args.use_fsdp, args.use_deepspeed, args.multi_gpu) == (
        kind == DistributedType.FSDP, kind == DistributedType.DEEPSPEED, kind == DistributedType.MULTI_GPU)


@pytest.mark.parametrize('name,offload', [('fsdp2_8gpu.yaml', False), ('fsdp2_offload.yaml', True)])
def test_fsdp2_plugin_from_the_launch_environment(name, offload):
    env = prepare_multi_gpu_env(launch_args(DIR / name))
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.transformer_cls_names_to_wrap == ['Qwen2DecoderLayer']
    assert ('CPUOffloadPolicy' in type(plugin.cpu_offload).__name__) == offload


@pytest.mark.parametrize('name,stage', [('zero2.yaml', 2), ('zero3.yaml', 3)])
def test_deepspeed_stage(name, stage):
    c = load_config_from_file(str(DIR / name))
    assert c.deepspeed_config['zero_stage'] == stage and c.deepspeed_config['gradient_accumulation_steps'] == 1


def test_a_typo_fails(tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text((DIR / 'fsdp2_8gpu.yaml').read_text().replace('mixed_precision', 'mixed_precison'))
    with pytest.raises(ValueError, match='unknown keys'):
        load_config_from_file(str(bad))
    bad.write_text((DIR / 'fsdp2_8gpu.yaml').read_text().replace('fsdp_offload_params', 'fsdp_ofload_params'))
    keys = load_config_from_file(str(bad)).fsdp_config   # nested keys pass the loader: the option check catches them
    assert 'fsdp_ofload_params' in keys
    assert 'fsdp_ofload_params' not in {a.dest for a in launch_command_parser()._actions}
