"""Compiled kernels of the event engine: the update of a linear layer (convolution or fully connected) from the
messages of its input quantizer.

.. math:: u_t[\\,b P_{out} + o\\,] \\mathrel{+}= \\sum_{(p, κ, o)} \\sum_{c:\\, s_{t,p,c} \\ne 0} \\frac{s_{t,p,c}}{k}\\, W[c, κ, :]

over the active input pixels ``p`` of stream ``b`` (the CSR list ``pix, ptr, ch, val`` with ``val = s/k``) and
their taps ``(κ, o)`` (:func:`~sigmadelta.runtime.events._maps.conv_taps`). ``W`` is laid out ``[C_in, K, C_out]``
(per group, see below), so the weights one message adds are one contiguous row ``W[c, κ]``; the kernels take row
views and index them with the loop counter (an index like ``W[c, base + o]`` compiles to gathers, 3x slower).

A fully connected layer is the same update with one pixel per stream and one tap; one flattened from a
``[C, H, W]`` value is a convolution whose single output pixel every input pixel reaches through its own tap.

Each output pixel reached is appended once to ``touched`` (``mark`` remembers it this frame): the rows the
next kernels visit. Products are fused multiply-adds where the CPU has them (``fastmath={"contract"}``): the sums
differ from the dense convolution's in their last bits only, as any two summation orders do.
"""

from __future__ import annotations

from ._jit import jit

__all__ = ["conv_events", "grouped_events", "depthwise_events", "clear_marks"]

_jit = jit(contract=True)


@_jit
def conv_events(pix, ptr, ch, val, n_pix, W, ntap, tap_k, tap_o, P_in, P_out, u, c0, mark, touched, n_touched):
    """A convolution with ``groups = 1`` (or a fully connected layer): ``W [C_in, K, C_out]``, output channels
    ``u[:, c0:c0+C_out]``. Per active pixel and tap, the output row stays in cache while the pixel's messages
    are added four at a time (four weight rows per pass over the row; the last 1-3 in one more pass). Returns the
    new count of touched rows."""
    C_out = W.shape[2]
    for a in range(n_pix):
        i = pix[a]
        b = i // P_in
        p = i - b * P_in
        base = b * P_out
        j0 = ptr[a]
        j1 = ptr[a + 1]
        for m in range(ntap[p]):
            kk = tap_k[p, m]
            t = base + tap_o[p, m]
            touched[n_touched] = t
            n_touched += 1 - mark[t]
            mark[t] = 1
            urow = u[t, c0:c0 + C_out]
            j = j0
            while j + 4 <= j1:
                w0 = W[ch[j], kk]
                w1 = W[ch[j + 1], kk]
                w2 = W[ch[j + 2], kk]
                w3 = W[ch[j + 3], kk]
                v0 = val[j]
                v1 = val[j + 1]
                v2 = val[j + 2]
                v3 = val[j + 3]
                for o in range(C_out):
                    urow[o] += v0 * w0[o] + v1 * w1[o] + v2 * w2[o] + v3 * w3[o]
                j += 4
            rest = j1 - j  # 0-3 messages left: one more pass over the row
            if rest == 3:
                w0 = W[ch[j], kk]
                w1 = W[ch[j + 1], kk]
                w2 = W[ch[j + 2], kk]
                v0 = val[j]
                v1 = val[j + 1]
                v2 = val[j + 2]
                for o in range(C_out):
                    urow[o] += v0 * w0[o] + v1 * w1[o] + v2 * w2[o]
            elif rest == 2:
                w0 = W[ch[j], kk]
                w1 = W[ch[j + 1], kk]
                v0 = val[j]
                v1 = val[j + 1]
                for o in range(C_out):
                    urow[o] += v0 * w0[o] + v1 * w1[o]
            elif rest == 1:
                w0 = W[ch[j], kk]
                v0 = val[j]
                for o in range(C_out):
                    urow[o] += v0 * w0[o]
    return n_touched


@_jit
def grouped_events(pix, ptr, ch, val, n_pix, W, cin_g, ntap, tap_k, tap_o, P_in, P_out, u, c0, mark, touched,
                   n_touched):
    """A grouped convolution (depthwise included): ``W [C_in, K, C_out/G]`` holds, for input channel ``c``, the
    weights to the ``C_out/G`` output channels of its group ``g = c // (C_in/G)``, which start at ``g·C_out/G``."""
    cout_g = W.shape[2]
    for a in range(n_pix):
        i = pix[a]
        b = i // P_in
        p = i - b * P_in
        base = b * P_out
        j0 = ptr[a]
        j1 = ptr[a + 1]
        for m in range(ntap[p]):
            kk = tap_k[p, m]
            t = base + tap_o[p, m]
            touched[n_touched] = t
            n_touched += 1 - mark[t]
            mark[t] = 1
            urow = u[t]
            for j in range(j0, j1):
                c = ch[j]
                w = W[c, kk]
                v = val[j]
                first = c0 + (c // cin_g) * cout_g
                seg = urow[first:first + cout_g]
                for o in range(cout_g):
                    seg[o] += v * w[o]
    return n_touched


@_jit
def depthwise_events(pix, ptr, ch, val, n_pix, W, ntap, tap_k, tap_o, P_in, P_out, u, c0, mark, touched, n_touched,
                     row):
    """A depthwise convolution (one output channel per input channel), ``W [K, C]``. A pixel with few messages
    adds one scalar per message and tap; one with more (over 1/8 of its channels) has them spread into the zeroed
    scratch ``row [C]`` and adds ``row · W[κ]`` per tap in one vectorised pass over the channels (zeroed again)."""
    C = W.shape[1]
    for a in range(n_pix):
        i = pix[a]
        b = i // P_in
        p = i - b * P_in
        base = b * P_out
        j0 = ptr[a]
        j1 = ptr[a + 1]
        spread = 8 * (j1 - j0) > C
        if spread:
            for j in range(j0, j1):
                row[ch[j]] = val[j]
        for m in range(ntap[p]):
            kk = tap_k[p, m]
            t = base + tap_o[p, m]
            touched[n_touched] = t
            n_touched += 1 - mark[t]
            mark[t] = 1
            urow = u[t, c0:c0 + C]
            w = W[kk]
            if spread:
                for c in range(C):
                    urow[c] += row[c] * w[c]
            else:
                for j in range(j0, j1):
                    c = ch[j]
                    urow[c] += val[j] * w[c]
        if spread:
            for j in range(j0, j1):
                row[ch[j]] = 0.0
    return n_touched


@_jit
def clear_marks(mark, touched, n):
    """Forget this frame's touched rows: ``mark[touched[:n]] = 0``."""
    for a in range(n):
        mark[touched[a]] = 0
