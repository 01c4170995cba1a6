from HOI.models.resnet3d import (  # noqa: F401  I3D ResNet-50 for PNR / OSCC
    I3DResNet,
    KeyframeHead,
    KeyframeLocalizationResNet,
    StateChangeClsResNet,
)
from HOI.models.resnet3d import export_official as export_i3d_official  # noqa: F401
from HOI.models.resnet3d import native_to_official as i3d_native_to_official  # noqa: F401
from HOI.models.resnet3d import official_to_native as i3d_official_to_native  # noqa: F401
from HOI.models.slowfast import (  # noqa: F401  SlowFast 8x8 R101 for AR (and the LTA clip encoder)
    AR_NUM_CLASSES,
    MultiTaskSlowFast,
    SlowFast,
    SlowFastClipEncoder,
    export_slowfast_official,
    load_recognition_trunk,
    load_slowfast_official,
    slowfast_key_to_native,
    slowfast_key_to_official,
    slowfast_native_to_official,
    slowfast_official_to_native,
)
from HOI.models.lta import (  # noqa: F401  LTA SlowFast + transformer aggregator + multi-head decoder
    ConcatAggregator,
    ForecastingEncoderDecoder,
    MultiHeadDecoder,
    TransformerAggregator,
    export_lta_official,
    load_lta_official,
    lta_key_to_native,
    lta_key_to_official,
    lta_native_to_official,
    lta_official_to_native,
)
