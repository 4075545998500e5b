"""CompelEncoder: weighted, unlimited-length prompts for SD 1.x and SDXL, through compel.

The weighting itself is compel's (`EmbeddingsProvider.get_embeddings_for_weighted_prompt_fragments`:
up-weights scale the distance from the empty prompt, down-weights blend towards the prompt with that
fragment masked out). What this module changes around it, in a small subclass of compel's provider:

- chunking as A1111 does (75 tokens, cut after a nearby comma, BREAK), so long prompts are never cut;
- any CLIP-skip layer (compel knows only "last" and "penultimate"), chosen as the pipeline's own
  `encode_prompt` does, so an unweighted prompt gives exactly diffusers' tensors;
- the attention mask is left out when it masks nothing, again to match diffusers bit for bit;
- SDXL's pooled embedding comes from the first chunk of the prompt with the weighting syntax removed
  (compel would tokenize the raw string, brackets and all).

The code here overrides three methods of compel 2.5.1's `EmbeddingsProvider`; requirements pin it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from compel import Compel, DownweightMode, EmbeddingsProvider, ReturnedEmbeddingsType, SplitLongTextMode
from compel.prompt_parser import Blend, Conjunction, CrossAttentionControlSubstitute

from pipelines.errors import InvalidRequest
from pipelines.loading.loader import LoadedModel
from pipelines.prompts.conditioning import Conditioning
from pipelines.prompts.embeddings import TextualInversions, embedding_start_ids
from pipelines.prompts.syntax import BREAK_MARK, a1111_chunks, is_compel_syntax, parse_a1111, strip_lora_tags
from pipelines.types import Architecture


@dataclass(frozen=True)
class Layer:
    """Which hidden state of a CLIP text encoder conditions the UNet."""

    index: int | None  # into `hidden_states`; None = the model's own last (normalized) output
    normalize: bool  # apply the final layer norm (SD 1.x does, SDXL does not)


def layer_for(architecture: Architecture, clip_skip: int) -> Layer:
    """A1111's "Clip skip" (1 = last layer) as the pipeline's encode_prompt reads diffusers' clip_skip."""
    if architecture in (Architecture.SDXL, Architecture.SDXL_REFINER):
        return Layer(-(clip_skip + 1), normalize=False)  # SDXL starts from the penultimate layer
    return Layer(None, True) if clip_skip <= 1 else Layer(-clip_skip, normalize=True)


class A1111Provider(EmbeddingsProvider):
    """compel's provider with A1111's chunking and BREAK, any CLIP-skip layer, and no needless mask."""

    def __init__(self, tokenizer: Any, text_encoder: Any, layer: Layer):
        super().__init__(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            truncate=False,
            padding_attention_mask_value=1,
            downweight_mode=DownweightMode.MASK,
            returned_embeddings_type=ReturnedEmbeddingsType.LAST_HIDDEN_STATES_NORMALIZED,  # unused: see below
            split_long_text_mode=SplitLongTextMode.BRUTAL,  # unused: chunking is overridden
        )
        self.layer = layer
        self.comma_id = tokenizer.convert_tokens_to_ids(",</w>")
        self.base_vocab = tokenizer.vocab_size  # ids past it are textual-inversion vectors
        self.embedding_starts = embedding_start_ids(tokenizer)
        self._pooled: dict[tuple[int, ...], torch.Tensor] = {}  # first-chunk ids -> pooled output

    def get_token_ids(
        self,
        texts: list[str],
        include_start_and_end_markers: bool = True,
        padding: str = "do_not_pad",
        truncation_override: bool | None = None,
    ) -> list[list[int]]:
        if padding != "do_not_pad" or truncation_override:
            raise NotImplementedError("A1111Provider tokenizes without padding or truncation")
        wanted = [t for t in texts if t != BREAK_MARK]
        encoded = iter(self.tokenizer(wanted, add_special_tokens=False, verbose=False)["input_ids"] if wanted else [])
        result = []
        for text in texts:
            ids = [] if text == BREAK_MARK else list(next(encoded))
            result.append(self.bos_sequence + ids + self.eos_sequence if include_start_and_end_markers else ids)
        return result

    def get_token_ids_and_expand_weights(self, fragments: list[str], weights: list[float], device: Any):
        if len(fragments) != len(weights):
            raise ValueError(f"{len(fragments)} fragments but {len(weights)} weights")
        per_fragment = self.get_token_ids(fragments or [""], include_start_and_end_markers=False)
        chunks = a1111_chunks(
            per_fragment,
            weights or [1.0],
            [f == BREAK_MARK for f in fragments] or [False],
            self.comma_id,
            embedding_start=self.embedding_starts.__contains__,
            is_embedding=lambda token: token >= self.base_vocab,
        )
        ids: list[int] = []
        per_token: list[float] = []
        width = self.max_token_count - 2
        for chunk_ids, chunk_weights in chunks:
            pad = width - len(chunk_ids)
            ids += self.bos_sequence + chunk_ids + self.eos_sequence + [self.tokenizer.pad_token_id] * pad
            per_token += [1.0] + chunk_weights + [1.0] + [1.0] * pad
        return (
            torch.tensor(ids, dtype=torch.long, device=device),
            torch.tensor(per_token, dtype=self.get_dtype_for_device(device), device=device),
            torch.ones(len(ids), dtype=torch.long, device=device),
        )

    def _encode_token_ids_to_embeddings(self, token_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        mask = None if attention_mask is None or bool((attention_mask == 1).all()) else attention_mask
        if self.layer.index is None:
            return self.text_encoder(token_ids, attention_mask=mask)[0]
        out = self.text_encoder(token_ids, attention_mask=mask, output_hidden_states=True)
        if mask is None and hasattr(out, "text_embeds"):  # SDXL's text_encoder_2: keep the pooled output too
            self._pooled[tuple(token_ids[0].tolist())] = self._pooled_from(out, token_ids)
        hidden = out.hidden_states[self.layer.index]
        if not self.layer.normalize:
            return hidden
        # transformers 5 flattened CLIPTextModel (no `.text_model`); older versions nest it
        return getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm(hidden)

    def pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """SDXL's pooled embedding: text_encoder_2's output for the first chunk, weights ignored (as A1111).

        The chunk was usually encoded already, unmasked, while its hidden states were taken; that output is
        reused, so the pooled embedding costs no extra pass.
        """
        ids, _, _ = self.get_token_ids_and_expand_weights(list(texts), [1.0] * len(texts), device=self.text_encoder.device)
        first = ids[: self.max_token_count].unsqueeze(0)
        key = tuple(first[0].tolist())
        if key not in self._pooled:
            self._pooled[key] = self._pooled_from(self.text_encoder(first, output_hidden_states=True), first)
        return self._pooled[key].to(self.text_encoder.dtype)

    def _pooled_from(self, out: Any, token_ids: torch.Tensor) -> torch.Tensor:
        if bool((token_ids >= self.base_vocab).any()):
            # CLIP pools at the highest token id (its legacy end-of-text rule); textual-inversion ids are
            # higher than that, so pool at the real end-of-text position instead.
            end = int((token_ids[0] == self.tokenizer.eos_token_id).nonzero()[0])
            return self.text_encoder.text_projection(out.last_hidden_state[:, end])
        return out[0]


class CompelEncoder:
    """conditioning.PromptEncoder with A1111 and compel weighting, long prompts and textual inversions."""

    def __init__(self, embeddings: TextualInversions | None = None):
        self.embeddings = embeddings

    def encode(self, model: LoadedModel, prompt: str, negative: str, clip_skip: int, guidance: bool) -> Conditioning:
        providers = self.providers(model, clip_skip)
        texts = {"prompt": strip_lora_tags(prompt)}
        if guidance:
            texts["negative_prompt"] = strip_lora_tags(negative)
        substitute = self.embeddings.prepare(model, texts.values()) if self.embeddings else _same
        used = tuple(self.embeddings.used(model, texts.values())) if self.embeddings else ()
        with torch.no_grad():
            encoded = [self.encode_text(providers, text, substitute, field) for field, text in texts.items()]
            embeds = pad_to_same_length([e for e, _ in encoded], providers)
            sdxl = model.architecture in (Architecture.SDXL, Architecture.SDXL_REFINER)
            pooled = [providers[-1].pooled(p) for _, p in encoded] if sdxl else [None] * len(texts)
        return Conditioning(
            prompt_embeds=embeds[0],
            negative_prompt_embeds=embeds[1] if guidance else None,
            pooled_prompt_embeds=pooled[0],
            negative_pooled_prompt_embeds=pooled[1] if guidance else None,
            embeddings=used,
        )

    def providers(self, model: LoadedModel, clip_skip: int) -> list[A1111Provider]:
        pipe = model.pipe
        if model.architecture is Architecture.SDXL_REFINER:  # the refiner has OpenCLIP bigG only
            pairs = [(pipe.tokenizer_2, pipe.text_encoder_2)]
        else:
            pairs = [(pipe.tokenizer, pipe.text_encoder)]
        if model.architecture is Architecture.SDXL:
            pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
        layer = layer_for(model.architecture, clip_skip)
        for _, encoder in pairs:
            layers = encoder.config.num_hidden_layers
            if clip_skip > layers:
                raise InvalidRequest(
                    f"Clip skip {clip_skip} is more than the {layers} layers of {model.name}'s text encoder.", field="clip_skip"
                )
        return [A1111Provider(tokenizer, encoder, layer) for tokenizer, encoder in pairs]

    def encode_text(
        self, providers: list[A1111Provider], text: str, substitute: Callable[[str], str], field: str = "prompt"
    ) -> tuple[torch.Tensor, list[str]]:
        """(embeddings of all text encoders side by side, the fragments the pooled embedding is made from)."""
        try:
            if is_compel_syntax(text):
                conjunction = Compel.parse_prompt_string(substitute(text))
                per_encoder = [_compel_on(p).build_conditioning_tensor_for_conjunction(conjunction)[0] for p in providers]
                pooled_texts = _first_prompt_texts(conjunction)
            else:
                fragments = parse_a1111(substitute(text))
                texts = [f.text for f in fragments]
                weights = _usable_weights(providers[0], texts, [f.weight for f in fragments])
                per_encoder = [
                    p.get_embeddings_for_weighted_prompt_fragments([texts], [weights], device=p.text_encoder.device)
                    for p in providers
                ]
                pooled_texts = texts  # BREAKs kept: the pooled embedding is the first chunk's
        except (ValueError, RuntimeError, IndexError) as exc:  # compel's own checks on odd prompts
            if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc):
                raise
            raise InvalidRequest(f"The {field.replace('_', ' ')} could not be encoded: {exc}", field=field) from exc
        embeds = torch.cat(_pad_each(per_encoder, providers), dim=-1)
        if not bool(torch.isfinite(embeds).all()):
            raise InvalidRequest(
                f"The weights in the {field.replace('_', ' ')} leave nothing to condition on "
                "(for example .blend() weights that add up to 0, or a weight too large for this precision).",
                field=field,
            )
        return embeds, pooled_texts


def _same(text: str) -> str:
    return text


def _compel_on(provider: A1111Provider) -> Compel:
    """A Compel object whose embeddings come from our provider (for compel-syntax prompts)."""
    compel = Compel(
        tokenizer=provider.tokenizer,
        text_encoder=provider.text_encoder,
        truncate_long_prompts=False,
        split_long_text_mode=SplitLongTextMode.BRUTAL,
    )
    compel.conditioning_provider = provider
    return compel


def _usable_weights(provider: A1111Provider, texts: list[str], weights: list[float]) -> list[float]:
    """Weight 1 for fragments that hold no token (e.g. `[ ]`): compel cannot down-weight nothing."""
    token_ids = provider.get_token_ids(texts, include_start_and_end_markers=False)
    return [w if ids else 1.0 for w, ids in zip(weights, token_ids)]


def _first_prompt_texts(conjunction: Conjunction) -> list[str]:
    prompt = conjunction.prompts[0]
    if isinstance(prompt, Blend):
        prompt = prompt.prompts[0]
    texts: list[str] = []
    for child in getattr(prompt, "children", []):
        if isinstance(child, CrossAttentionControlSubstitute):
            texts += [f.text for f in child.original]
        elif hasattr(child, "text"):
            texts.append(child.text)
    return texts or [""]


def _pad_each(tensors: list[torch.Tensor], providers: list[A1111Provider]) -> list[torch.Tensor]:
    """Give each encoder's output the same number of chunks, padding with that encoder's empty prompt."""
    longest = max(t.shape[1] for t in tensors)
    return [t if t.shape[1] == longest else _pad(t, p.empty_z, longest) for t, p in zip(tensors, providers)]


def pad_to_same_length(tensors: list[torch.Tensor], providers: list[A1111Provider]) -> list[torch.Tensor]:
    """Positive and negative padded with empty-prompt chunks to the same length, as A1111 does."""
    longest = max(t.shape[1] for t in tensors)
    if all(t.shape[1] == longest for t in tensors):
        return tensors
    empty = torch.cat([p.empty_z.to(tensors[0].dtype) for p in providers], dim=-1)  # one encoder pass each
    return [_pad(t, empty, longest) for t in tensors]


def _pad(tensor: torch.Tensor, empty: torch.Tensor, length: int) -> torch.Tensor:
    repeats = (length - tensor.shape[1]) // empty.shape[1]
    return torch.cat([tensor, empty.to(tensor.device, tensor.dtype).repeat(tensor.shape[0], repeats, 1)], dim=1)
