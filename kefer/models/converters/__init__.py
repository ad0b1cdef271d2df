"""Converters: a source weights file -> the state dict of a registry architecture.

- ``facenet_tf.py``: FaceNet's frozen TensorFlow graph -> facenet-pytorch's InceptionResnetV1.
- ``timm_layouts.py``: EfficientNet-Lite0 (lukemelas naming), MS-Celeb ResNet-18 and Swin-T files -> timm keys.
"""
