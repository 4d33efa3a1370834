r"""LORS^A: the private part of query-generated matrices, for one layer of a stack."""
import torch
import torch.nn as nn

from .checks import check_int


class AdaptiveLowRankResidual(nn.Module):
    r"""``\sum_j B_gj E_gj(q) A_gj`` for ``G`` generated ``d x h`` matrices per query, the private
    residual a layer adds to the shared generated matrices ``W_shared(q)`` (LORS^A).

    * ``E(q) = core_generator(q)``: ``Linear(query_dim -> G*K*k*k)``, the ``K`` (``num_terms``)
      private ``k x k`` cores (``k`` = ``rank``) of every group; weight and bias zero, so the
      residual is 0 at init;
    * ``B`` ``(G*K, d, k)`` and ``A`` ``(G*K, k, h)``: static factors, Kaiming-uniform (fan-in
      of the stored 3-d tensor, as in the released LORS code); index ``g*K + j``.

    The shared generator is not here: it belongs to whoever shares it. Two ways to use the
    residual (MACs per query and group in :meth:`macs`):

    * :meth:`matrix` forms it, ``(..., G, d, h)``, to be added to ``W_shared(q)``;
    * :meth:`apply_to` computes ``x @ residual`` for ``x`` ``(..., G, P, d)`` as
      ``((x B) E) A`` without forming it: ``x B`` and ``. A`` use the static factors (one large
      GEMM over all queries), only the ``k x k`` step is per query.

    Args:
        query_dim: length of q.
        rows, cols: d and h.
        groups: G matrices per query.
        rank: k, in ``[1, min(d, h)]``.
        num_terms: K >= 1.
    """

    def __init__(self, query_dim: int, rows: int, cols: int, groups: int = 1,
                 rank: int = 16, num_terms: int = 1):
        super().__init__()
        self.rows, self.cols = check_int(rows, 'rows'), check_int(cols, 'cols')
        self.groups = check_int(groups, 'groups')
        self.rank = check_int(rank, 'rank', high=min(rows, cols), high_name='min(rows, cols)')
        self.num_terms = check_int(num_terms, 'num_terms')
        G, K, k = self.groups, self.num_terms, self.rank
        self.core_generator = nn.Linear(check_int(query_dim, 'query_dim'), G * K * k * k)
        self.B = nn.Parameter(torch.empty(G * K, self.rows, k))
        self.A = nn.Parameter(torch.empty(G * K, k, self.cols))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.zeros_(self.core_generator.weight)
        nn.init.zeros_(self.core_generator.bias)
        nn.init.kaiming_uniform_(self.B)
        nn.init.kaiming_uniform_(self.A)

    def init_weights(self) -> None:
        self.reset_parameters()

    def cores(self, query: torch.Tensor) -> torch.Tensor:
        """``E(q)``: ``[..., query_dim]`` -> ``[..., G, K, k, k]``."""
        k = self.rank
        return self.core_generator(query).unflatten(-1, (self.groups, self.num_terms, k, k))

    def factors(self):
        """``(B, A)`` as ``(G, K, d, k)`` and ``(G, K, k, h)``."""
        split = (self.groups, self.num_terms)
        return self.B.unflatten(0, split), self.A.unflatten(0, split)

    def matrix(self, cores: torch.Tensor) -> torch.Tensor:
        """The residual ``[..., G, d, h]`` of ``cores`` ``[..., G, K, k, k]``.

        The per-query step multiplies the core with the smaller outer factor; the remaining
        product contracts (term, k) in one GEMM, with no ``(..., K, d, h)`` temporary."""
        B, A = self.factors()
        if self.rows <= self.cols:
            left = torch.einsum('gjdk,...gjkl->...gjdl', B, cores)
            return torch.einsum('...gjdl,gjlh->...gdh', left, A)
        right = torch.einsum('...gjkl,gjlh->...gjkh', cores, A)
        return torch.einsum('gjdk,...gjkh->...gdh', B, right)

    def apply_to(self, x: torch.Tensor, cores: torch.Tensor) -> torch.Tensor:
        """``x @ residual`` for ``x`` ``[..., G, P, d]`` -> ``[..., G, P, h]``."""
        B, A = self.factors()
        projected = torch.einsum('...gpd,gjdk->...gpjk', x, B)  # static GEMM, all queries
        mixed = torch.einsum('...gpjk,...gjkl->...gpjl', projected, cores)  # per query, k x k
        return torch.einsum('...gpjl,gjlh->...gph', mixed, A)  # static GEMM, sums the terms

    def apply_transposed_to(self, x: torch.Tensor, cores: torch.Tensor) -> torch.Tensor:
        """``x @ residual^T`` for ``x`` ``[..., G, P, h]`` -> ``[..., G, P, d]``, unformed
        (so ``residual @ y == apply_transposed_to(y^T)^T``)."""
        B, A = self.factors()
        projected = torch.einsum('...gph,gjkh->...gpjk', x, A)
        mixed = torch.einsum('...gpjl,...gjkl->...gpjk', projected, cores)
        return torch.einsum('...gpjk,gjdk->...gpd', mixed, B)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """The residual for ``query``: ``[..., query_dim]`` -> ``[..., G, d, h]``."""
        return self.matrix(self.cores(query))

    def macs(self, num_vectors: int) -> dict:
        """MACs per query and group of ``x @ (W(q) + residual(q))`` beyond ``x @ W(q)``, for
        ``x`` of ``num_vectors`` rows: 'materialize' (the residual rides along in that product)
        or 'sequential' (:meth:`apply_to`)."""
        d, h, k, K = self.rows, self.cols, self.rank, self.num_terms
        return dict(materialize=K * (min(d, h) * k * k + d * k * h),
                    sequential=K * num_vectors * k * (d + k + h))

    @torch.no_grad()
    def fold_affine(self, dtype: torch.dtype = torch.float64):
        """The residual is linear in the cores and the cores are affine in q, so the residual is
        an affine function of q: ``(weight [G*d*h, D], bias [G*d*h])`` of it, in ``dtype``,
        as ``[..., G, d, h]`` blocks flattened in (group, row, col) order."""
        B, A = (t.detach().to(dtype) for t in self.factors())
        k = self.rank

        def residual(cores):  # [..., G*K*k*k] -> [..., G, d, h]
            cores = cores.unflatten(-1, (self.groups, self.num_terms, k, k))
            return torch.einsum('gjdk,...gjkl,gjlh->...gdh', B, cores, A)

        core = self.core_generator
        return (residual(core.weight.detach().to(dtype).mT).flatten(-3).mT,
                residual(core.bias.detach().to(dtype)).flatten(-3))

    def extra_repr(self) -> str:
        return (f'rows={self.rows}, cols={self.cols}, groups={self.groups}, rank={self.rank}, '
                f'num_terms={self.num_terms}')
