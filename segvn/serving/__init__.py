"""segvn served to the labelling tools: a Label Studio ML backend (``python -m segvn.serve``).

- :mod:`segvn.serving.labelconfig`: the brush-label tag, image tag and label names of a project's config;
- :mod:`segvn.serving.sources`: a task's image, read only under the allowed roots or from allowed hosts;
- :mod:`segvn.serving.app`: the FastAPI app (``/health``, ``/setup``, ``/predict``, ``/webhook``);
- :mod:`segvn.serving.finetune`: the webhook's background fine-tuning (off by default).
"""
