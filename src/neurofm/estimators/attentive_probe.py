"""An attentive probe: learned queries attend over a frozen backbone's cached tokens, then a linear layer.

The probe reads what a backbone embedded with ``pooling="flatten"`` (every
token, flattened, as the embedding cache holds it), so training it never
runs the backbone. Its fitted weights are kept as numpy arrays: the fitted
probe pickles, clones and travels to workers without torch state, and the
module is rebuilt from them for each prediction.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.model_selection import train_test_split
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from ..configs.models import TrainerConfig, attentive_heads_refusal
from ..cv import grouped_holdout, label_combinations
from ..data import check_multilabel_targets
from ..exceptions import ConfigError
from .task_tags import TaskEstimator

__all__ = ["AttentiveProbe", "check_probe_loss"]


def check_probe_loss(loss: str, task: str) -> None:
    """Refuse a regression loss (``"mse"``, ``"huber"``) for a classification or multilabel probe.

    Raises
    ------
    ConfigError
        When ``loss`` is not ``"auto"`` and ``task`` is not ``"regression"``.
    """
    if loss == "auto" or task == "regression":
        return
    fix = (
        "loss='auto' (binary cross-entropy per label)"
        if task == "multilabel"
        else "loss='auto' (cross-entropy), or set task='regression'"
    )
    raise ConfigError(f"AttentiveProbeConfig(loss={loss!r}) is a regression loss, and the task is {task}; use {fix}.")


@functools.cache
def _pooler_class():
    """The torch module: defined on first use so that ``import neurofm`` does not load torch."""
    import torch  # heavy: import neurofm does not load torch

    class AttentivePooler(torch.nn.Module):
        def __init__(self, dim: int, n_queries: int, n_heads: int, n_outputs: int):
            super().__init__()
            self.queries = torch.nn.Parameter(torch.randn(1, n_queries, dim) * 0.02)
            self.norm = torch.nn.LayerNorm(dim)
            self.attention = torch.nn.MultiheadAttention(dim, n_heads, batch_first=True)
            self.linear = torch.nn.Linear(dim, n_outputs)

        def forward(self, tokens):
            tokens = self.norm(tokens)
            queries = self.queries.expand(tokens.shape[0], -1, -1)
            pooled, _ = self.attention(queries, tokens, tokens, need_weights=False)
            return self.linear(pooled.mean(dim=1))

    return AttentivePooler


class AttentiveProbe(TaskEstimator):
    """Learned-query cross-attention pooling of tokens and a linear layer, trained with early stopping.

    Each row of ``X`` is a window's tokens flattened, ``n_tokens *
    token_dim`` values (a backbone's ``pooling="flatten"`` embedding). The
    tokens are standardised with the training data's statistics (one mean
    and scale per token feature, shared by every token), a ``LayerNorm``
    follows, ``n_queries`` learned queries attend over the tokens, their
    outputs are averaged and a linear layer gives one output per class
    (cross-entropy), one per label for multilabel (binary cross-entropy,
    ``BCEWithLogitsLoss``) or one for regression (on the standardised
    target: squared error, or the Huber loss with ``loss="huber"``). AdamW
    trains it on the training data less a validation share taken from it
    (whole groups when :meth:`fit` is given ``groups``); the weights of the
    epoch with the smallest validation loss are kept.

    Parameters
    ----------
    task : {"classification", "regression", "multilabel"}
        What the probe predicts. ``"multilabel"``: ``y`` of shape
        (n_windows, n_labels) of 0/1, each label needing a positive and a
        negative row; :meth:`predict` gives (n, n_labels) of 0/1, each label
        on where its sigmoid probability is at least 0.5, and
        :meth:`predict_proba` those probabilities, as the fine-tuner does.
    token_dim : int
        Width of one token; the rows' length must be a multiple of it.
    n_queries : int
        Learned queries (their outputs are averaged).
    n_heads : int
        Attention heads; must divide ``token_dim``.
    max_epochs : int
        Upper bound on epochs.
    lr, weight_decay : float
        AdamW's learning rate and weight decay.
    batch_size : int
        Rows per optimiser step.
    early_stopping_patience : int | None
        Epochs without a smaller validation loss before stopping; ``None``:
        train ``max_epochs`` (the best epoch is still kept).
    validation_fraction : float
        Share of the training rows held out for validation (stratified by
        class when every class has two rows; multilabel: by each row's
        combination of labels, the rare ones pooled); 0: no validation, the
        last epoch is kept. With ``groups`` of at least two values given to
        :meth:`fit`: the share of the groups, each group on one side only.
    class_weight : {"balanced"} | None
        Classification: weigh each class's loss inversely to its frequency.
        Multilabel: each label's ``pos_weight``, its negatives over its
        positives in the training rows (as ``trainer.class_weight`` sets it
        for the fine-tuner).
    loss : {"auto", "mse", "huber"}
        The training (and validation) loss, as ``TrainerConfig.loss`` names
        it for the fine-tuner. ``"auto"``: cross-entropy for classification,
        binary cross-entropy for multilabel, mean squared error for
        regression. ``"mse"`` and ``"huber"`` (:class:`torch.nn.HuberLoss`,
        robust to outlying targets) are regression losses, refused for the
        other tasks.
    huber_delta : float
        Where the Huber loss turns from quadratic to linear, in the target's
        units (used with ``loss="huber"`` only).
    random_state : int | None
        Seeds the initialisation, the validation split and the batches.

    Attributes
    ----------
    classes_ : ndarray | None
        The classes; the label indices ``0 .. n_labels - 1`` for multilabel
        (``None`` for regression).
    n_tokens_ : int
        Tokens per row.
    mean_, scale_ : ndarray, shape (token_dim,)
        The tokens' standardisation.
    state_ : dict of str to ndarray
        The trained module's weights.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss`` (``None`` without
        validation) and ``loss``, the loss's name (``"cross_entropy"``,
        ``"binary_cross_entropy"``, ``"mse"`` or ``"huber"``).
    best_epoch_ : int
        The epoch whose weights were kept.
    stopped_ : str
        Why training ended.
    """

    def __init__(
        self,
        task: str = "classification",
        token_dim: int = 200,
        n_queries: int = 1,
        n_heads: int = 4,
        max_epochs: int = 100,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        batch_size: int = 64,
        early_stopping_patience: int | None = 10,
        validation_fraction: float = 0.2,
        class_weight: str | None = "balanced",
        loss: str = "auto",
        huber_delta: float = 1.0,
        random_state: int | None = None,
    ):
        self.task = task
        self.token_dim = token_dim
        self.n_queries = n_queries
        self.n_heads = n_heads
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.early_stopping_patience = early_stopping_patience
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.loss = loss
        self.huber_delta = huber_delta
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self.task == "multilabel":  # one classifier of several binary targets, as scikit-learn tags those
            # scikit-learn >= 1.6 has tags and is the only caller of this method; 1.5 has no ClassifierTags
            from sklearn.utils import ClassifierTags

            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_label=True)
            tags.target_tags.multi_output = True
        return tags

    # -- checks ---------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.task not in ("classification", "regression", "multilabel"):
            raise ConfigError(f"task={self.task!r}: use 'classification', 'regression' or 'multilabel'.")
        if self.loss not in ("auto", "mse", "huber"):
            raise ConfigError(f"loss={self.loss!r}: use 'auto', 'mse' or 'huber'.")
        check_probe_loss(self.loss, self.task)
        if not self.huber_delta > 0:
            raise ConfigError(f"huber_delta={self.huber_delta!r}: use a positive number, in the target's units.")
        if self.token_dim % self.n_heads:
            raise ConfigError(attentive_heads_refusal(self.n_heads, self.token_dim))
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction={self.validation_fraction!r}: use a share in [0, 1).")

    def _tokens(self, X) -> np.ndarray:
        """``X`` as ``(n, n_tokens, token_dim)`` float32."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] % self.token_dim:
            raise ConfigError(
                f"The attentive probe reads rows of n_tokens * token_dim values (a backbone's pooling='flatten' "
                f"embedding); got shape {X.shape} with token_dim={self.token_dim}. Give the backbone "
                "pooling='flatten', and set token_dim to its token width when model_kwargs change it."
            )
        return X.reshape(len(X), -1, self.token_dim)

    # -- training -------------------------------------------------------------------

    def fit(self, X, y, groups=None) -> AttentiveProbe:
        """Standardise the tokens, then train the pooling and the linear layer with early stopping.

        Parameters
        ----------
        X : array-like, shape (n_windows, n_tokens * token_dim)
            Each window's tokens, flattened.
        y : array-like
            The classes, the regression targets, or (multilabel) 0/1 of shape
            (n_windows, n_labels).
        groups : array-like of shape (n_windows,) | None
            Each window's group (subject, recording). With at least two
            groups the validation windows are whole groups, so that early
            stopping is judged on groups the training never saw, as the
            test windows will be; otherwise the split is by window.

        Returns
        -------
        AttentiveProbe
            The fitted probe.
        """
        import torch  # heavy: import neurofm does not load torch

        from ..training.finetune import loss_function, loss_name  # heavy: loads torch

        self._check_params()
        tokens = self._tokens(X)
        classification = self.task == "classification"
        y = check_multilabel_targets(y) if self.task == "multilabel" else np.asarray(y)
        self.n_features_in_ = tokens.shape[1] * tokens.shape[2]
        self.n_tokens_ = tokens.shape[1]
        # multilabel: the validation rows stratified on each row's label combination (rare ones pooled)
        strata = y if classification else label_combinations(y, 2) if self.task == "multilabel" else None
        train, val = self._split(strata, len(y), groups)
        self.mean_ = tokens[train].mean(axis=(0, 1))
        scale = tokens[train].std(axis=(0, 1))
        scale[scale == 0] = 1.0  # a constant feature carries nothing; left as it is rather than divided by zero
        self.scale_ = scale
        inputs = torch.from_numpy((tokens - self.mean_) / self.scale_)
        if classification:
            self.classes_ = np.unique(y)
            targets = torch.from_numpy(np.searchsorted(self.classes_, y)).long()
            n_outputs = len(self.classes_)
            weight = None
            if self.class_weight == "balanced":
                counts = np.bincount(targets[train].numpy(), minlength=n_outputs).astype(np.float32)
                weight = len(train) / (n_outputs * np.maximum(counts, 1.0))
        elif self.task == "multilabel":
            self.classes_ = np.arange(y.shape[1])
            targets = torch.from_numpy(y.astype(np.float32))
            n_outputs = y.shape[1]
            weight = None
            if self.class_weight == "balanced":  # a rare label's positives count as much as its negatives
                positives = y[train].sum(axis=0)
                weight = ((len(train) - positives) / np.maximum(positives, 1)).astype(np.float32)
        else:
            self.classes_ = None
            values = y.astype(np.float64)
            self.y_mean_ = float(values[train].mean())
            self.y_scale_ = float(values[train].std()) or 1.0
            targets = torch.from_numpy(((values - self.y_mean_) / self.y_scale_).astype(np.float32))[:, None]
            n_outputs = 1
            weight = None
        # The probe learns the standardised target, and huber_delta is in the target's units: Huber with
        # delta / scale on standardised residuals is the target-unit loss over scale**2, so the same minimiser.
        delta = self.huber_delta / self.y_scale_ if self.classes_ is None else self.huber_delta
        trainer = TrainerConfig(loss=self.loss, huber_delta=delta)  # the fine-tuner's losses, built in one place
        loss_fn = loss_function(self.task, weight, "cpu", trainer)
        # fork_rng: the seed shapes this probe only, not the caller's global torch generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0 if self.random_state is None else int(self.random_state))
            module = _pooler_class()(self.token_dim, self.n_queries, self.n_heads, n_outputs)
            self._train(module, inputs, targets, train, val, loss_fn, loss_name(self.task, trainer))
        return self

    def _split(self, y: np.ndarray | None, n: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
        """Training and validation rows, both from the rows given to fit; whole groups when there are two."""
        rows = np.arange(n)
        n_val = int(round(self.validation_fraction * n))
        if n_val == 0 or n - n_val < 1:
            return rows, rows[:0]
        grouped = None if groups is None else grouped_holdout(groups, self.validation_fraction, self.random_state)
        if grouped is not None:  # as the fine-tuner splits
            return grouped
        stratify = None
        if y is not None:
            _, counts = np.unique(y, return_counts=True)
            if counts.min() >= 2 and n_val >= len(counts):
                stratify = y
        train, val = train_test_split(rows, test_size=n_val, stratify=stratify, random_state=self.random_state)
        return np.sort(train), np.sort(val)

    def _train(self, module, inputs, targets, train, val, loss_fn, loss_label: str) -> None:
        import torch  # heavy: import neurofm does not load torch

        optimizer = torch.optim.AdamW(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        train_rows = torch.from_numpy(train)
        best_loss, best_state, waited = np.inf, None, 0
        self.history_, self.stopped_ = [], f"max_epochs={self.max_epochs} reached"
        for epoch in range(self.max_epochs):
            module.train()
            total = 0.0
            for batch in train_rows[torch.randperm(len(train_rows))].split(self.batch_size):
                optimizer.zero_grad()
                loss = loss_fn(module(inputs[batch]), targets[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            record = {"epoch": epoch, "train_loss": total / len(train), "val_loss": None, "loss": loss_label}
            if len(val):
                module.eval()
                with torch.no_grad():
                    record["val_loss"] = float(loss_fn(module(inputs[val]), targets[val]))
            self.history_.append(record)
            monitored = record["val_loss"] if len(val) else -epoch  # without validation: the last epoch
            if monitored < best_loss:
                best_loss, waited, self.best_epoch_ = monitored, 0, epoch
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                waited += 1
                if self.early_stopping_patience is not None and len(val) and waited >= self.early_stopping_patience:
                    self.stopped_ = f"no smaller validation loss for {waited} epochs"
                    break
        if best_state is None:  # no finite validation loss: the last epoch's weights, and the record says why
            self.best_epoch_, self.stopped_ = len(self.history_) - 1, "no finite validation loss"
            best_state = module.state_dict()
        self.state_ = {k: v.detach().numpy().copy() for k, v in best_state.items()}

    # -- prediction -----------------------------------------------------------------

    def _outputs(self, X) -> np.ndarray:
        import torch  # heavy: import neurofm does not load torch

        check_is_fitted(self, "state_")
        tokens = self._tokens(X)
        if tokens.shape[1] != self.n_tokens_:
            raise ConfigError(
                f"The attentive probe was fitted on {self.n_tokens_} tokens per row, got {tokens.shape[1]}."
            )
        n_outputs = 1 if self.classes_ is None else len(self.classes_)
        module = _pooler_class()(self.token_dim, self.n_queries, self.n_heads, n_outputs)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in self.state_.items()})
        module.eval()
        with torch.no_grad():
            return module(torch.from_numpy((tokens - self.mean_) / self.scale_)).numpy().astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """The class, the regression value, or (multilabel) each label's 0/1, shape (n, n_labels)."""
        outputs = self._outputs(X)
        if self.classes_ is None:
            return outputs[:, 0] * self.y_scale_ + self.y_mean_
        if self.task == "multilabel":  # each label on where its probability is at least 0.5: its logit at least 0
            return (outputs >= 0).astype(np.int64)
        return self.classes_[np.argmax(outputs, axis=1)]

    def _is_classifier(self) -> bool:
        return self.task in ("classification", "multilabel")

    @available_if(_is_classifier)
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the outputs), columns in the order of ``classes_``.

        Multilabel: each label's probability of 1 (the sigmoid of its
        output), shape (n, n_labels); the rows do not sum to 1.
        """
        outputs = self._outputs(X)
        if self.task == "multilabel":
            return expit(outputs)  # expit: no overflow warning for a large negative logit, unlike 1 / (1 + exp(-x))
        outputs -= outputs.max(axis=1, keepdims=True)
        proba = np.exp(outputs)
        return proba / proba.sum(axis=1, keepdims=True)

    # -- what an experiment records (neurofm.protocols.NeuralTrainable) -------------

    def get_training_history(self) -> list[dict[str, Any]]:
        check_is_fitted(self, "state_")
        return [dict(record) for record in self.history_]

    def get_checkpoint_manifest(self) -> dict[str, Any]:
        check_is_fitted(self, "state_")
        best = self.history_[self.best_epoch_]
        return {"saved": "none (kept in memory)", "best_epoch": self.best_epoch_, "best_val_loss": best["val_loss"]}

    def get_model_card_info(self) -> dict[str, Any]:
        check_is_fitted(self, "state_")
        return {
            "pooling": "attentive",
            "n_tokens": self.n_tokens_,
            "token_dim": self.token_dim,
            "n_queries": self.n_queries,
            "n_heads": self.n_heads,
            "parameters": int(sum(v.size for v in self.state_.values())),
        }

    def get_failure_diagnostics(self) -> dict[str, Any]:
        check_is_fitted(self, "state_")
        losses = [r["train_loss"] for r in self.history_] + [r["val_loss"] for r in self.history_ if r["val_loss"]]
        return {"stopped": self.stopped_, "non_finite_loss": not bool(np.all(np.isfinite(losses)))}

    def get_artifact_metadata(self) -> dict[str, Any]:
        return {
            "training_history": self.get_training_history(),
            "attentive_probe": self.get_model_card_info()
            | self.get_checkpoint_manifest()
            | self.get_failure_diagnostics(),
        }
