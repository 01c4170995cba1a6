from HHI.models.talknet import TalkNet, TalkNetASD, TalkNetHeads, TalkNetLossHead, talknet_loss  # noqa: F401
from HHI.models.resnet import FrameEncoder  # noqa: F401
from HHI.models.resnetse import ResNetSE  # noqa: F401
from HHI.models.lstm import (  # noqa: F401
    BaselineLSTM,
    LAMBaselineLSTM,
    TTMBaselineLSTM,
    STAGE1_LSTM_MODELS,
    build_lam_model,
    build_ttm_model,
    load_social_checkpoint,
    social_key_map,
)
