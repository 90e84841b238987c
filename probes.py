"""
Linear probes on saved hidden states (used by interpret.py; tests/test_interpret.py).

A probe is multinomial logistic regression on the states, z-scored with the training part's mean and
standard deviation, p(y | h) = softmax(W h + b), fit by full-batch L-BFGS on the mean cross-entropy plus
weight_decay * ||W||^2 (deterministic: no sampling). It is trained on one part of the data and scored on
another, and every accuracy comes with the numbers that say what it means:
- majority: always the most frequent class of the training part;
- identity: the most frequent class of each token id in the training part (the global majority for ids
  it never saw): what a reader of the sign alone, without context, gets;
- shuffled: the same probe trained on the training labels permuted at random and scored on the true
  labels of the other part (Hewitt & Liang 2019 ask for such controls): a probe that still scores above
  the majority here has learned something that is not in the labels.
"""
import numpy as np
import torch
import torch.nn.functional as F


def fit_probe(x, y, n_classes, weight_decay=1e-4, max_iter=100):
    """x (N, d) float, y (N,) int64 in 0..n_classes-1 -> a predict(x) -> class ids function."""
    x = x.double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mu) / sd
    W = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn='strong_wolfe',
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(F.linear(xs, W, b), y) + weight_decay * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    W, b = W.detach(), b.detach()
    return lambda z: F.linear((z.double() - mu) / sd, W, b).argmax(-1)


def accuracy(pred, y):
    return float((torch.as_tensor(pred) == torch.as_tensor(y)).double().mean()) if len(y) else float('nan')


def majority_baseline(y_train, y_test):
    return accuracy(torch.full_like(y_test, int(torch.bincount(y_train).argmax())), y_test)


def identity_baseline(ids_train, y_train, ids_test, y_test):
    """Accuracy of predicting, for each token id, its most frequent class in the training part."""
    glob = int(torch.bincount(y_train).argmax())
    table = {}
    for i, c in zip(ids_train.tolist(), y_train.tolist()):
        table.setdefault(i, []).append(c)
    best = {i: int(np.bincount(cs).argmax()) for i, cs in table.items()}
    return accuracy(torch.tensor([best.get(i, glob) for i in ids_test.tolist()]), y_test)


def probe_scores(x_train, y_train, x_test, y_test, ids_train, ids_test, n_classes, seed=0, weight_decay=1e-4):
    """{probe, majority, identity, shuffled} accuracies on the test part (see the module docstring)."""
    probe = fit_probe(x_train, y_train, n_classes, weight_decay)
    g = torch.Generator().manual_seed(seed)
    shuffled = fit_probe(x_train, y_train[torch.randperm(len(y_train), generator=g)], n_classes, weight_decay)
    return {'probe': accuracy(probe(x_test), y_test), 'majority': majority_baseline(y_train, y_test),
            'identity': identity_baseline(ids_train, y_train, ids_test, y_test),
            'shuffled': accuracy(shuffled(x_test), y_test)}
