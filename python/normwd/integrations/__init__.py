"""normwd's Monitor where training loops already are: a PyTorch Lightning callback
(``normwd.integrations.lightning``) and a Hugging Face ``Trainer`` callback
(``normwd.integrations.hf``), each a thin wrapper of ``normwd.torch.Monitor``; each module
imports its framework, so neither is needed for the other."""
