"""Adapter target layers of the backbones we test, written from their published widths.

Each helper returns (stage, role, d_out, d_in) per target layer, d_in counting in/groups·kh·kw
for convs. Group keys (stage, role) match CondLoRA's default grouping, where a role that changes
shape across blocks (a stage's first conv1) is given its own name.
"""


def resnet_bottleneck_convs(blocks=(4, 6, 3)):
    """layer2..4 conv1/2/3 + downsample of ResNet-50 (blocks (4, 6, 3)) / -101 ((4, 23, 3))."""
    convs = []
    in_ch = 256
    for stage, planes, n in zip((2, 3, 4), (128, 256, 512), blocks):
        for b in range(n):
            cin = in_ch if b == 0 else 4 * planes
            convs += [(stage, 'conv1' if b else 'conv1.0', planes, cin),
                      (stage, 'conv2', planes, planes * 9), (stage, 'conv3', 4 * planes, planes)]
            if b == 0:
                convs.append((stage, 'downsample', 4 * planes, in_ch))
        in_ch = 4 * planes
    return convs


def resnet_basic_convs(base=64, blocks=(2, 2, 2, 2)):
    """layer1..4 conv1/2 + downsample of a BasicBlock ResNet (ResNet-18: blocks (2, 2, 2, 2))."""
    convs = []
    in_ch = base
    for stage, n in enumerate(blocks, 1):
        width = base * 2**(stage - 1)
        for b in range(n):
            cin = in_ch if b == 0 else width
            # block 0's conv1 has its own shape only when the stage changes width
            role = 'conv1.0' if b == 0 and cin != width else 'conv1'
            convs += [(stage, role, width, cin * 9), (stage, 'conv2', width, width * 9)]
            if b == 0 and cin != width:
                convs.append((stage, 'downsample', width, cin))
        in_ch = width
    return convs


def swin_linears(depths=(2, 2, 6, 2), embed=96, mlp_ratio=4):
    """qkv, proj, fc1, fc2 of every Swin block (Swin-T: depths (2, 2, 6, 2); Swin-S: 2, 2, 18, 2)."""
    out = []
    for stage, n in enumerate(depths):
        c = embed * 2**stage
        for _ in range(n):
            out += [(stage, 'qkv', 3 * c, c), (stage, 'proj', c, c),
                    (stage, 'fc1', mlp_ratio * c, c), (stage, 'fc2', c, mlp_ratio * c)]
    return out


def vera_count(layers, rank):
    """VeRA: Σ (d_out + r) over the wrapped layers."""
    return sum(d_out + rank for _, _, d_out, _ in layers)


def condlora_count(layers, rank):
    """CondLoRA: r (d_out + d_in) per (stage, role) group, shared by the group's layers."""
    groups = {(stage, role): (d_out, d_in) for stage, role, d_out, d_in in layers}
    return sum(rank * (d_out + d_in) for d_out, d_in in groups.values()), len(groups)
