"""linformer-pytorch's ``Padder`` and ``Visualizer`` (differences from the original: docs/compat.md).

- Padder pads to ``net.input_size`` *and masks the padding*, keeps the input's dtype, and exposes
  ``pad`` (returns the padded input and its mask). Since seqops' Linformer accepts short inputs
  directly, the Padder is optional: both give the same outputs.
- Visualizer works for Linformer, LinformerLM and MHAttention, draws self- and cross-attention
  rows, and writes a PNG without a display when show=False. matplotlib is optional: a one-line
  ImportError says so.
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import Linformer, LinformerLM
from .attention import MHAttention, check_mask
from .tracing import leading


class Padder(nn.Module):
    """Pads the sequence axis of the input to ``net.input_size``, runs ``net`` with the padding
    masked, and returns the first L positions.

    net: Linformer (tensor (B, L, channels)) or LinformerLM (tensor (B, L) token ids, padded with
    token 0). forward(tensor, input_mask=None, embeddings=None, embeddings_mask=None,
    visualize=False) -> net's output for the L positions.
    """

    def __init__(self, net: Union[Linformer, LinformerLM]) -> None:
        super().__init__()
        if not isinstance(net, (Linformer, LinformerLM)):
            raise TypeError(f"Padder wraps a Linformer or LinformerLM, got {type(net).__name__}")
        self.net = net

    def pad(self, tensor: Tensor, input_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(padded (B, input_size, ...) in tensor's dtype, mask (B, input_size) bool, True on the
        kept positions of the first L)."""
        B, L = tensor.shape[0], tensor.shape[1]
        size = self.net.input_size
        if L > size:
            raise ValueError(f"sequence length {L} is longer than input_size={size}")
        check_mask("input_mask", input_mask, B, L)
        # F.pad rather than slice assignment: it stays valid for any L under TorchScript and
        # torch.export (a zero-length pad when L == input_size).
        padded = F.pad(tensor, [0, 0] * (tensor.dim() - 2) + [0, size - L])
        keep = torch.ones(B, L, dtype=torch.bool, device=tensor.device) if input_mask is None else input_mask
        return padded, F.pad(keep, [0, size - L], value=False)

    def forward(self, tensor: Tensor, input_mask: Optional[Tensor] = None, embeddings: Optional[Tensor] = None,
                embeddings_mask: Optional[Tensor] = None, visualize: bool = False) -> Tensor:
        padded, mask = self.pad(tensor, input_mask)
        return leading(self.net(padded, mask, embeddings, embeddings_mask, visualize), 1, tensor.shape[1])


class Visualizer:
    """Draws the attention of every head of every attention layer for one example.

    net: Linformer, LinformerLM or MHAttention, after a forward with ``visualize=True``.
    """

    def __init__(self, net: Union[Linformer, LinformerLM, MHAttention]) -> None:
        if isinstance(net, LinformerLM):
            net = net.linformer
        if isinstance(net, Linformer):
            self.attentions: List[MHAttention] = [block.fn for block in net.seq if isinstance(block.fn, MHAttention)]
        elif isinstance(net, MHAttention):
            self.attentions = [net]
        else:
            raise TypeError(f"Visualizer needs a Linformer, LinformerLM or MHAttention, got {type(net).__name__}")

    def plot_all_heads(self, title: str = "Visualization of Attention Heads", show: bool = True,
                       save_file: Optional[str] = None, figsize: Tuple[float, float] = (8, 6),
                       n_limit: Optional[int] = None, example: int = 0):
        """One image per (layer, head) of example ``example``'s attention probabilities (queries
        down, keys across; the first n_limit queries when given), saved to ``save_file`` (e.g. a
        PNG) and/or shown. Returns the matplotlib Figure."""
        probs = [attn.heads.P_bar for attn in self.attentions]
        if any(p is None for p in probs):
            raise RuntimeError("no attention stored: run the model with visualize=True first")
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("Visualizer.plot_all_heads needs matplotlib: pip install matplotlib") from None
        if show:
            import matplotlib.pyplot as plt
            fig = plt.figure(figsize=figsize)
        else:
            fig = Figure(figsize=figsize)
        heads = probs[0].shape[1]
        axs = fig.subplots(len(probs), heads, squeeze=False)
        for row, (attn, p) in enumerate(zip(self.attentions, probs)):
            for h in range(heads):
                ax = axs[row, h]
                image = p[example, h, :n_limit].detach().float().cpu().numpy()
                ax.imshow(image, cmap="Reds", aspect="auto", vmin=0.0)
                ax.set_xticks([])
                ax.set_yticks([])
                if h == 0:
                    ax.set_ylabel(f"Layer {row + 1}" + (" (cross)" if attn.decoder_mode else ""))
                if row == len(probs) - 1:
                    ax.set_xlabel(f"Head {h + 1}")
        fig.suptitle(title)
        if save_file is not None:
            fig.savefig(save_file)
        if show:
            plt.show()
        return fig
