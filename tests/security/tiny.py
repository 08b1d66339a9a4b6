"""A seconds-long distillation recipe on generated shapes, shared by the security tests."""

TINY_DISTILL = [
    "data.datasets=[synthetic:train@6]",
    "data.num_points=256",
    "probe.enabled=false",
    "engine.steps=2",
    "engine.batch_size=4",
    "engine.warmup_steps=1",
    "engine.log_every=1",
    "engine.ckpt_every=1",
    "engine.progress=false",
    "engine.tensorboard=false",
]
