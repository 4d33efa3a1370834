# LORS on a DETR decoder (mmdet's DeformableDetrTransformerDecoderLayer, Deformable DETR and
# DINO), as a fragment for a config that inherits the stock one:
#   _base_ = ['mmdet::dino/...py', '../_base_/lors/detr-decoder-lors.py']
#   model = dict(type='LORSSharing', detector_type='DINO',
#                stacks={{_base_.detr_decoder_lors_stacks}})
# The 6 layers of decoder.layers share the deformable cross-attention's sampling_offsets,
# attention_weights, value_proj and output_proj and the FFN's two Linears; each layer keeps a
# rank-8 LORS^T residual and its bias. The self-attention (nn.MultiheadAttention reads its
# projections as weights) and the norms stay per layer.
detr_decoder_lors_stacks = [
    dict(
        container='decoder.layers',
        static=dict(
            targets=[r'cross_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)',
                     r'ffn\.layers\.(0\.0|1)'],
            rank=8))
]
