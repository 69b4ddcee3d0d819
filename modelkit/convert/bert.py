"""bert (sentence-transformers embedding models such as all-MiniLM-L6-v2): a leading
``bert.`` stripped, ``.gamma``/``.beta`` read as weight/bias, pooler and MLM heads
dropped, WordPiece vocabulary with phantom spaces, non-causal attention, pooling type
from ``modules.json``."""

from __future__ import annotations

from collections.abc import Iterable

from gguf import MODEL_ARCH, Keys

from modelkit.convert import tokenizer
from modelkit.convert.architecture import Architecture, OutTensor, Source, register
from modelkit.convert.kvs import KVList
from modelkit.convert.qwen import pooling_kvs

_DROPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


@register
class Bert(Architecture):
    gguf_arch = MODEL_ARCH.BERT
    hf_names = ("BertModel", "BertForMaskedLM", "CamembertModel",
                "BertForSequenceClassification")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        labels = self.hp.get("id2label")
        if isinstance(labels, dict) and len(labels) == 2 and labels.get("0") == "LABEL_0" \
                and labels.get("1") == "LABEL_1":
            labels = None
        self.labels = labels if isinstance(labels, dict) and labels else None

    def filter(self, name: str) -> str | None:
        name = name.removeprefix("bert.")
        if name.endswith(".gamma"):
            name = name[:-6] + ".weight"
        if name.endswith(".beta"):
            name = name[:-5] + ".bias"
        if name in _DROPPED or name.startswith(("cls.predictions", "cls.seq_relationship")):
            return None
        return super().filter(name)

    def modify(self, src: Source, bid: int | None) -> Iterable[OutTensor]:
        name = src.name
        if self.labels and name in ("classifier.weight", "classifier.bias"):
            name = name.replace("classifier.", "classifier.out_proj.")
        return [self.out(self.map_name(name), src)]

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = super().expected_shapes()
        shapes.pop("output.weight", None)
        return shapes

    def set_params(self, kv: KVList, file_type: int) -> None:
        super().set_params(kv, file_type)
        kv.boolean(self.key(Keys.Attention.CAUSAL), False)
        pooling_kvs(self, kv)
        if self.labels:
            # AutoConfig turns id2label's keys into ints: sorted numerically
            kv.add_array(self.key(Keys.Classifier.OUTPUT_LABELS),
                         [str(v) for _, v in sorted(self.labels.items(),
                                                    key=lambda kv: int(kv[0]))])

    def set_vocab(self, kv: KVList) -> None:
        tokenizer.wordpiece_vocab(self.folder, kv)
