"""Classification metrics over a shared label space (scikit-learn underneath)."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """Overall accuracy, mean per-class accuracy, per-class accuracy and the confusion matrix.

    ``y_true`` and ``y_pred`` are [N] indices into ``classes``; the confusion matrix is
    rows = true class, columns = predicted class (counts).
    """
    cm = confusion_matrix(y_true, y_pred, labels=list(range(len(classes))))
    support = cm.sum(1)
    per_class = {c: (float(cm[k, k] / support[k]) if support[k] else None) for k, c in enumerate(classes)}
    present = [v for v in per_class.values() if v is not None]
    return {
        "accuracy": float((np.asarray(y_true) == np.asarray(y_pred)).mean()) if len(y_true) else 0.0,
        "mean_accuracy": float(np.mean(present)) if present else 0.0,
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
        "n": int(len(y_true)),
    }


def per_class_auc(y_true: np.ndarray, scores: np.ndarray, classes: list[str]) -> dict:
    """One-vs-rest ROC AUC of each class's score column of ``scores`` [N, K] (None for a class with
    no face, or with every face): how well a class's score ranks its own faces above the others,
    whether or not it wins the argmax."""
    y_true = np.asarray(y_true)
    out = {}
    for k, c in enumerate(classes):
        positive = y_true == k
        out[c] = float(roc_auc_score(positive, scores[:, k])) if 0 < positive.sum() < len(y_true) else None
    return out
