#!/usr/bin/env python3
"""PyTorch modules for QuintNet's training plans, and their ONNX exports.

`MLP` is the original library's MNIST model shape; `Block` a pre-LN
transformer block (4 heads, erf GELU) mean-pooled into a classifier head;
both are the oracles of test/e2e/test_train.py. Running this script writes
the bundled exports (TorchScript exporter, opset 17, dynamic batch):

    models/train/mlp_mnist.onnx        784-256-256-10 MLP (the README example)
    models/train/vit_mnist.onnx        ViT(hidden 64, 4 heads, 4 blocks) on 28x28 images
    test/lit/Inputs/train_block.onnx   Block(hidden 16, 2 heads, 4 classes)
    test/lit/Inputs/train_gpt2.onnx    GPT2Logits(2 layers, hidden 32, 4 heads, vocab 64)
    test/lit/Inputs/train_gpt2_odd_vocab.onnx  GPT2Logits(1 layer, hidden 32, 4 heads, vocab 63)
    test/lit/Inputs/train_llama.onnx   LlamaLogits(1 layer, hidden 32, 4 heads, 2 K/V heads, vocab 64)

    python3 models/train_models.py
"""
import os

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MLP(nn.Module):
    def __init__(self, d_in=784, hidden=256, classes=10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, hidden=64, heads=4, classes=10):
        super().__init__()
        self.h, self.nh = hidden, heads
        self.ln1 = nn.LayerNorm(hidden)
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, 4 * hidden)
        self.down = nn.Linear(4 * hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        B, T = x.shape[0], x.shape[1]
        H, hd = self.h, self.h // self.nh
        a = self.ln1(x)
        q = self.q(a).view(B, T, self.nh, hd).transpose(1, 2)
        k = self.k(a).view(B, T, self.nh, hd).transpose(1, 2)
        v = self.v(a).view(B, T, self.nh, hd).transpose(1, 2)
        s = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1)
        o = (s @ v).transpose(1, 2).reshape(B, T, H)
        x = x + self.proj(o)
        x = x + self.down(nn.functional.gelu(self.up(self.ln2(x))))
        return self.head(x.mean(dim=1))


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.h, self.nh = hidden, heads
        self.q = nn.Linear(hidden, hidden)
        self.k = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, a):
        B, T = a.shape[0], a.shape[1]
        H, hd = self.h, self.h // self.nh
        q = self.q(a).view(B, T, self.nh, hd).transpose(1, 2)
        k = self.k(a).view(B, T, self.nh, hd).transpose(1, 2)
        v = self.v(a).view(B, T, self.nh, hd).transpose(1, 2)
        s = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, dim=-1)
        return self.proj((s @ v).transpose(1, 2).reshape(B, T, H))


class ViTBlock(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, heads)
        self.ln2 = nn.LayerNorm(hidden)
        self.up = nn.Linear(hidden, 4 * hidden)
        self.down = nn.Linear(4 * hidden, hidden)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.down(nn.functional.gelu(self.up(self.ln2(x))))


class ViT(nn.Module):
    """The original library's MNIST model shape: a small ViT on 28x28 images
    (7x7 patches by a Conv of stride 7, a class token, learned positions,
    `blocks` pre-LN blocks of `heads`-head attention + MLP, a 10-way head)."""

    def __init__(self, hidden=64, heads=4, blocks=4, classes=10, patch=7, image=28):
        super().__init__()
        n = (image // patch) ** 2
        self.patch = nn.Conv2d(1, hidden, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, n + 1, hidden) * 0.02)
        self.blocks = nn.ModuleList([ViTBlock(hidden, heads) for _ in range(blocks)])
        self.ln = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        p = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(p.shape[0], -1, -1), p], dim=1) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x)[:, 0])


class GPT2Logits(nn.Module):
    """A tiny Hugging Face GPT-2 (transformers 4.41.2, random weights, tied
    token embedding and LM head) returning the logits [B, T, V]."""

    def __init__(self, layers=2, hidden=64, heads=4, vocab=96, positions=32):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        cfg = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, vocab_size=vocab,
                         n_positions=positions, resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0, use_cache=False)
        self.m = GPT2LMHeadModel(cfg)

    def forward(self, ids):
        return self.m(input_ids=ids, use_cache=False).logits


class LlamaLogits(nn.Module):
    """A tiny Hugging Face Llama (transformers 4.41.2, random weights):
    RMSNorm, rotary embeddings (Slice, Neg, Concat of the halves), grouped-query
    attention (fewer K/V heads, repeated), SiLU-gated MLP, untied LM head;
    returns the logits [B, T, V]."""

    def __init__(self, layers=2, hidden=64, heads=4, kv_heads=2, vocab=96, positions=32):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM
        cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                          num_key_value_heads=kv_heads, intermediate_size=2 * hidden,
                          vocab_size=vocab, max_position_embeddings=positions, use_cache=False,
                          tie_word_embeddings=False, attn_implementation="eager")
        self.m = LlamaForCausalLM(cfg)

    def forward(self, ids):
        return self.m(input_ids=ids, use_cache=False).logits


def export(module, example, path):
    module.eval()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    dynamic = {0: "batch", 1: "seq"} if example.dtype == torch.int64 else {0: "batch"}
    torch.onnx.export(module, (example,), path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": dynamic, "logits": dynamic},
                      opset_version=17, dynamo=False)


def main():
    torch.manual_seed(0)
    export(MLP(), torch.zeros(2, 784), os.path.join(ROOT, "models/train/mlp_mnist.onnx"))
    torch.manual_seed(0)
    export(Block(hidden=16, heads=2, classes=4), torch.zeros(2, 3, 16),
           os.path.join(ROOT, "test/lit/Inputs/train_block.onnx"))
    torch.manual_seed(0)
    export(ViT(), torch.zeros(2, 1, 28, 28), os.path.join(ROOT, "models/train/vit_mnist.onnx"))
    torch.manual_seed(0)
    export(GPT2Logits(layers=2, hidden=32, heads=4, vocab=64, positions=16),
           torch.zeros(2, 4, dtype=torch.int64), os.path.join(ROOT, "test/lit/Inputs/train_gpt2.onnx"))
    torch.manual_seed(0)
    export(GPT2Logits(layers=1, hidden=32, heads=4, vocab=63, positions=16),
           torch.zeros(2, 4, dtype=torch.int64),
           os.path.join(ROOT, "test/lit/Inputs/train_gpt2_odd_vocab.onnx"))
    torch.manual_seed(0)
    export(LlamaLogits(layers=1, hidden=32, heads=4, kv_heads=2, vocab=64, positions=16),
           torch.zeros(2, 4, dtype=torch.int64), os.path.join(ROOT, "test/lit/Inputs/train_llama.onnx"))


if __name__ == "__main__":
    main()
