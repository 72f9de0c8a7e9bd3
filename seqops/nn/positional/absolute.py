"""Absolute positions: fairseq's sinusoidal and learned embeddings (API in base.py)."""
import math
from typing import Optional

import torch
from torch import Tensor, nn

from .base import PositionalEmbedding, positions_or_arange


class SinusoidalPositionalEmbedding(PositionalEmbedding):
    """fairseq's sinusoidal embedding: row p = [sin(p f_i) | cos(p f_i)], f_i = 10000^(-i/(h-1)),
    h = embed_dim // 2, a zero column appended for odd embed_dim, the padding_idx row zero.

    ``forward(positions)`` (B, L) -> (B, L, embed_dim), no gradient. Positions are used as given
    (fairseq's convention: real tokens start at padding_idx + 1); ``forward_input`` with
    ``positions=None`` uses padding_idx + 1, padding_idx + 2, ... (0, 1, ... without padding_idx).
    The table is computed from the position values (any position works); the original's
    non-buffer table and ``_float_tensor`` buffer are gone (that key is dropped when loading an
    original state_dict). Attention is plain.
    """

    _legacy_state_keys = ("_float_tensor",)

    def __init__(self, *, embed_dim: int, max_length: Optional[int] = None,
                 padding_idx: Optional[int] = None, max_pos: Optional[int] = None) -> None:
        super().__init__(embed_dim=embed_dim, max_pos=max_pos, max_length=max_length,
                         padding_idx=padding_idx, dropout_p=None)
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")

    @staticmethod
    def get_embedding(max_length: int, embed_dim: int, padding_idx: Optional[int] = None,
                      positions: Optional[Tensor] = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Rows for positions 0..max_length-1 (or the given positions) -> (N, embed_dim)."""
        half_dim = embed_dim // 2
        step = math.log(10000) / max(half_dim - 1, 1)
        if positions is None:
            positions = torch.arange(max_length)
        freq = torch.exp(torch.arange(half_dim, dtype=dtype, device=positions.device) * -step)
        arg = positions.to(dtype).unsqueeze(-1) * freq
        emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
        if embed_dim % 2 == 1:
            emb = torch.cat([emb, emb.new_zeros(emb.shape[:-1] + (1,))], dim=-1)
        if padding_idx is not None:
            emb = emb.masked_fill((positions == padding_idx).unsqueeze(-1), 0.0)
        return emb

    def forward(self, positions: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
        """positions (B, L) integer -> (B, L, embed_dim) (float32 unless dtype is given)."""
        dtype = torch.float32 if dtype is None else dtype
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        emb = self.get_embedding(0, self.embed_dim, self.padding_idx, positions.long(), compute)
        return emb.to(dtype).detach()

    def _default_positions(self, input_: Tensor) -> Tensor:
        start = self.padding_idx + 1 if self.padding_idx is not None else 0
        return positions_or_arange(None, input_.shape[1], start, input_.device)

    def forward_input(self, input_: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        """input_ (B, L, embed_dim) + the embedding of positions (B, L)."""
        if positions is None:
            positions = self._default_positions(input_)
        return input_ + self.forward(positions, input_.dtype)


class LearnedPositionalEmbedding(PositionalEmbedding):
    """fairseq's learned positions: ``emb`` = nn.Embedding(max_length + 1, embed_dim,
    padding_idx), N(0, embed_dim^-1/2) init, padding row zero (state_dict key ``emb.weight``).

    Attributes the module lacks are read from ``emb`` (``weight``, ``num_embeddings``, ...), as
    the original intended. ``forward(positions)`` (B, L) -> (B, L, embed_dim); forward_input with
    ``positions=None`` uses padding_idx + 1, ... (0, 1, ... without padding_idx). Attention is
    plain.
    """

    def __init__(self, *, max_length: Optional[int] = None, embed_dim: int,
                 padding_idx: Optional[int] = None, max_pos: Optional[int] = None,
                 device=None, dtype=None) -> None:
        super().__init__(embed_dim=embed_dim, max_pos=max_pos, max_length=max_length,
                         padding_idx=padding_idx, dropout_p=None)
        if self.max_length is None:
            raise TypeError("LearnedPositionalEmbedding needs max_length")
        self.emb = nn.Embedding(self.max_length + 1, embed_dim, padding_idx=padding_idx,
                                device=device, dtype=dtype)
        nn.init.normal_(self.emb.weight, mean=0.0, std=embed_dim ** -0.5)
        if padding_idx is not None:
            with torch.no_grad():
                self.emb.weight[padding_idx].zero_()

    def __getattr__(self, name: str):
        # nn.Module keeps submodules out of __dict__, so reach `emb` through _modules directly
        # (the original's getattr(self.emb, ...) re-entered __getattr__ forever).
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules")
            if modules is not None and "emb" in modules and name != "emb":
                return getattr(modules["emb"], name)
            raise

    def forward(self, positions: Tensor) -> Tensor:
        """positions (B, L) integer -> (B, L, embed_dim)."""
        return self.emb(positions.long())

    def forward_input(self, input_: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        """input_ (B, L, embed_dim) + the embedding of positions (B, L)."""
        if positions is None:
            start = self.padding_idx + 1 if self.padding_idx is not None else 0
            positions = positions_or_arange(None, input_.shape[1], start, input_.device)
        return input_ + self.forward(positions).to(input_.dtype)
