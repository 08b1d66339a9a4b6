"""Test-only re-statements of the official Point-JEPA / Point-MAE module trees.

Written from the public code's key names, shapes and forward order (Conv1d(k=1) tokenizers,
manual-softmax attention, pos added before every block, final LayerNorm) so that a state dict
in the official layout can be produced and its forward computed independently of foundry3d.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class OfficialAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class OfficialMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class OfficialBlock(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = OfficialAttention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = OfficialMlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class OfficialPointNet(nn.Module):
    """first_conv / second_conv Sequentials of Conv1d(k=1), BN, ReLU, Conv1d."""

    def __init__(self, widths, dim: int, first_bias: bool) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, c1, 1, bias=first_bias), nn.BatchNorm1d(c1), nn.ReLU(), nn.Conv1d(c1, c2, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * c2, c3, 1, bias=first_bias), nn.BatchNorm1d(c3), nn.ReLU(), nn.Conv1d(c3, dim, 1)
        )

    def forward(self, patches):  # (M, K, 3)
        f = self.first_conv(patches.transpose(2, 1))
        g = f.max(dim=2, keepdim=True).values
        f = self.second_conv(torch.cat([g.expand(-1, -1, f.shape[2]), f], dim=1))
        return f.max(dim=2).values


class OfficialEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(OfficialBlock(dim, heads, qkv_bias) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, pos):
        for b in self.blocks:
            x = b(x + pos)
        return self.norm(x)


def randomise(module: nn.Module, seed: int) -> nn.Module:
    """Give every parameter and BN buffer non-trivial values (defaults would hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith("running_var"):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return module


class _Holder(nn.Module):
    pass


class OfficialPointJEPA(nn.Module):
    """Key layout of pointjepa.models.point_jepa.PointJepa after setup() (with the EMA teacher)."""

    def __init__(self, widths=(16, 32, 32), dim=32, depth=2, heads=2, pos_hidden=16) -> None:
        super().__init__()
        self.positional_encoding = nn.Sequential(nn.Linear(3, pos_hidden), nn.GELU(), nn.Linear(pos_hidden, dim))
        self.tokenizer = _Holder()
        self.tokenizer.embedding = _Holder()
        self.tokenizer.embedding.encoder = OfficialPointNet(widths, dim, first_bias=False)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.student = OfficialEncoder(dim, depth, heads, qkv_bias=True)
        self.predictor = _Holder()
        self.predictor.predictor_embed = nn.Linear(dim, dim // 2)
        self.predictor.mask_token = nn.Parameter(torch.zeros(1, 1, dim // 2))
        self.teacher = _Holder()
        self.teacher.online_model = self.student
        self.teacher.ema_model = copy.deepcopy(self.student)
        self.teacher.register_buffer("initted", torch.tensor([True]))
        self.teacher.register_buffer("step", torch.tensor([7]))

    def state_dict_official(self) -> dict:
        return dict(self.state_dict(keep_vars=False))

    def forward(self, patches, centres, encoder: str = "student"):
        b, g = centres.shape[:2]
        tokens = self.tokenizer.embedding.encoder(patches.reshape(b * g, patches.shape[2], 3)).reshape(b, g, -1)
        enc = self.student if encoder == "student" else self.teacher.ema_model
        return enc(tokens, self.positional_encoding(centres))


class OfficialPointMAE(nn.Module):
    """Key layout of Point_MAE (pretraining): MAE_encoder.{encoder,pos_embed,blocks.blocks,norm} + decoder."""

    def __init__(self, widths=(16, 32, 32), dim=32, depth=2, heads=2, pos_hidden=16) -> None:
        super().__init__()
        enc = _Holder()
        enc.encoder = OfficialPointNet(widths, dim, first_bias=True)
        enc.pos_embed = nn.Sequential(nn.Linear(3, pos_hidden), nn.GELU(), nn.Linear(pos_hidden, dim))
        enc.blocks = _Holder()
        enc.blocks.blocks = nn.ModuleList(OfficialBlock(dim, heads, qkv_bias=False) for _ in range(depth))
        enc.norm = nn.LayerNorm(dim)
        self.MAE_encoder = enc
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(3, pos_hidden), nn.GELU(), nn.Linear(pos_hidden, dim))
        self.MAE_decoder = _Holder()
        self.MAE_decoder.blocks = nn.ModuleList([OfficialBlock(dim, heads, qkv_bias=False)])
        self.MAE_decoder.norm = nn.LayerNorm(dim)
        self.increase_dim = nn.Sequential(nn.Conv1d(dim, 3 * 8, 1))

    def forward(self, patches, centres):
        e = self.MAE_encoder
        b, g = centres.shape[:2]
        x = e.encoder(patches.reshape(b * g, patches.shape[2], 3)).reshape(b, g, -1)
        pos = e.pos_embed(centres)
        for blk in e.blocks.blocks:
            x = blk(x + pos)
        return e.norm(x)


def _class_token_encoder(widths, channels, dim, depth, heads, pos_hidden, reduce: bool) -> nn.Module:
    """Point-BERT's MaskTransformer / ACT's VisableOnlyMaskTransformer encoder keys: encoder, reduce_dim,
    cls_token, cls_pos, pos_embed, blocks.blocks, norm (plus heads used only in pretraining)."""
    enc = _Holder()
    enc.encoder = OfficialPointNet(widths, channels, first_bias=True)
    enc.reduce_dim = nn.Linear(channels, dim) if reduce else nn.Identity()
    enc.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    enc.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
    enc.pos_embed = nn.Sequential(nn.Linear(3, pos_hidden), nn.GELU(), nn.Linear(pos_hidden, dim))
    enc.blocks = _Holder()
    enc.blocks.blocks = nn.ModuleList(OfficialBlock(dim, heads, qkv_bias=False) for _ in range(depth))
    enc.norm = nn.LayerNorm(dim)
    return enc


def class_token_forward(enc: nn.Module, patches, centres):
    """Their forward without masking: tokenizer, reduce_dim, class token first, pos before every block, norm;
    the patch tokens are x[:, 1:]."""
    b, g = centres.shape[:2]
    x = enc.reduce_dim(enc.encoder(patches.reshape(b * g, patches.shape[2], 3)).reshape(b, g, -1))
    x = torch.cat([enc.cls_token.expand(b, -1, -1), x], 1)
    pos = torch.cat([enc.cls_pos.expand(b, -1, -1), enc.pos_embed(centres)], 1)
    for blk in enc.blocks.blocks:
        x = blk(x + pos)
    return enc.norm(x)[:, 1:]


class OfficialPointBERT(nn.Module):
    """Key layout of Point_BERT (pretraining): transformer_q / transformer_k (MoCo), dvae, queue."""

    def __init__(self, widths=(16, 32, 32), channels=24, dim=32, depth=2, heads=2, pos_hidden=16) -> None:
        super().__init__()
        self.transformer_q = _class_token_encoder(widths, channels, dim, depth, heads, pos_hidden, reduce=True)
        self.transformer_q.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.transformer_q.lm_head = nn.Linear(dim, 64)
        self.transformer_q.cls_head = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 16))
        self.transformer_k = copy.deepcopy(self.transformer_q)
        self.dvae = _Holder()
        self.dvae.codebook = nn.Parameter(torch.zeros(64, 8))
        self.register_buffer("queue", torch.randn(16, 32))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    def forward(self, patches, centres):
        return class_token_forward(self.transformer_q, patches, centres)


class OfficialPointBERTFinetuned(nn.Module):
    """Key layout of Point-BERT's PointTransformer (fine-tuned): the encoder at the top level + head."""

    def __init__(self, widths=(16, 32, 32), channels=24, dim=32, depth=2, heads=2, pos_hidden=16) -> None:
        super().__init__()
        enc = _class_token_encoder(widths, channels, dim, depth, heads, pos_hidden, reduce=True)
        for name, child in enc.named_children():
            self.add_module(name, child)
        self.cls_token, self.cls_pos = enc.cls_token, enc.cls_pos
        self.cls_head_finetune = nn.Sequential(nn.Linear(2 * dim, 16), nn.ReLU(), nn.Linear(16, 40))

    def forward(self, patches, centres):
        return class_token_forward(self, patches, centres)


class OfficialACT(nn.Module):
    """Key layout of ACT_PointDistillation (pretraining): ACT_encoder (reduce_dim an Identity when the
    encoder width equals the model width), ACT_decoder, dvae_tokenizer, proj_head, mask_token, cls_pos."""

    def __init__(self, widths=(16, 32, 32), dim=32, depth=2, heads=2, pos_hidden=16) -> None:
        super().__init__()
        self.ACT_encoder = _class_token_encoder(widths, dim, dim, depth, heads, pos_hidden, reduce=False)
        self.ACT_encoder.lm_head = nn.Linear(dim, 64)
        self.ACT_encoder.cls_head = nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, 16))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.proj_head = nn.Linear(dim, 8)
        self.dvae_tokenizer = _Holder()
        self.dvae_tokenizer.vit = nn.Linear(8, 8)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(3, pos_hidden), nn.GELU(), nn.Linear(pos_hidden, dim))
        self.ACT_decoder = _Holder()
        self.ACT_decoder.blocks = nn.ModuleList([OfficialBlock(dim, heads, qkv_bias=False)])

    def forward(self, patches, centres):
        return class_token_forward(self.ACT_encoder, patches, centres)
