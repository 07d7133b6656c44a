"""The papers the built-in methods follow, by key: what a dataset card cites.

    python -c "from synth_ray.methods.papers import PAPERS; print(sorted(PAPERS))"

A method names its papers for a given config through `MethodSpec.papers` (a rephrase job cites
the papers of the styles it used, a judge the paper of its rubric). A method with no paper (plain
generation, a plug-in that names none) cites only synth-ray.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paper:
    key: str  # the BibTeX key
    title: str
    first_author: str  # "Last, First", or an organisation (no comma), or an organisation (no comma)
    year: int
    url: str
    arxiv: str | None = None

    @property
    def organisation(self) -> bool:
        return "," not in self.first_author

    def bibtex(self) -> str:
        """The title in double braces, so no style lowercases STaR or WizardLM."""
        eprint = (
            f"  eprint = {{{self.arxiv}}},\n  archivePrefix = {{arXiv}},\n" if self.arxiv else ""
        )
        author = (
            f"{{{self.first_author}}}" if self.organisation else f"{self.first_author} and others"
        )
        return (
            f"@misc{{{self.key},\n  title = {{{{{self.title}}}}},\n"
            f"  author = {{{author}}},\n  year = {{{self.year}}},\n"
            f"{eprint}  url = {{{self.url}}}\n}}"
        )

    def line(self) -> str:
        who = self.first_author
        if not self.organisation:
            who = who.split(",")[0] + " et al."
        return f"{who} {self.year}, [{self.title}]({self.url})"


def _arxiv(key: str, title: str, first_author: str, year: int, arxiv: str) -> Paper:
    return Paper(key, title, first_author, year, f"https://arxiv.org/abs/{arxiv}", arxiv)


PAPERS: dict[str, Paper] = {
    p.key: p
    for p in (
        _arxiv(
            "maini2024wrap",
            "Rephrasing the Web: A Recipe for Compute and Data-Efficient Language Modeling",
            "Maini, Pratyush",
            2024,
            "2401.16380",
        ),
        _arxiv(
            "su2024nemotroncc",
            "Nemotron-CC: Transforming Common Crawl into a Refined Long-Horizon Pretraining "
            "Dataset",
            "Su, Dan",
            2024,
            "2412.02595",
        ),
        Paper(
            "finephrase2025",
            "FinePhrase",
            "Hugging Face",
            2025,
            "https://github.com/huggingface/finephrase",
        ),
        _arxiv(
            "wang2023selfinstruct",
            "Self-Instruct: Aligning Language Models with Self-Generated Instructions",
            "Wang, Yizhong",
            2023,
            "2212.10560",
        ),
        _arxiv(
            "xu2023wizardlm",
            "WizardLM: Empowering Large Language Models to Follow Complex Instructions",
            "Xu, Can",
            2023,
            "2304.12244",
        ),
        _arxiv(
            "zelikman2022star",
            "STaR: Bootstrapping Reasoning With Reasoning",
            "Zelikman, Eric",
            2022,
            "2203.14465",
        ),
        _arxiv(
            "yuan2023rft",
            "Scaling Relationship on Learning Mathematical Reasoning with Large Language Models",
            "Yuan, Zheng",
            2023,
            "2308.01825",
        ),
        _arxiv(
            "yu2023metamath",
            "MetaMath: Bootstrap Your Own Mathematical Questions for Large Language Models",
            "Yu, Longhui",
            2023,
            "2309.12284",
        ),
        _arxiv(
            "huang2022selfimprove",
            "Large Language Models Can Self-Improve",
            "Huang, Jiaxin",
            2022,
            "2210.11610",
        ),
        _arxiv(
            "chen2022pot",
            "Program of Thoughts Prompting: Disentangling Computation from Reasoning for "
            "Numerical Reasoning Tasks",
            "Chen, Wenhu",
            2022,
            "2211.12588",
        ),
        _arxiv(
            "chen2024alpagasus",
            "AlpaGasus: Training a Better Alpaca with Fewer Data",
            "Chen, Lichang",
            2024,
            "2307.08701",
        ),
        _arxiv(
            "penedo2024fineweb",
            "The FineWeb Datasets: Decanting the Web for the Finest Text Data at Scale",
            "Penedo, Guilherme",
            2024,
            "2406.17557",
        ),
        _arxiv(
            "cui2024ultrafeedback",
            "UltraFeedback: Boosting Language Models with Scaled AI Feedback",
            "Cui, Ganqu",
            2024,
            "2310.01377",
        ),
        _arxiv(
            "yuan2024selfrewarding",
            "Self-Rewarding Language Models",
            "Yuan, Weizhe",
            2024,
            "2401.10020",
        ),
        _arxiv(
            "tunstall2023zephyr",
            "Zephyr: Direct Distillation of LM Alignment",
            "Tunstall, Lewis",
            2023,
            "2310.16944",
        ),
        _arxiv(
            "xu2024magpie",
            "Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned LLMs with Nothing",
            "Xu, Zhangchen",
            2024,
            "2406.08464",
        ),
        Paper(
            "benallal2024cosmopedia",
            "Cosmopedia: how to create large-scale synthetic data for pre-training",
            "Ben Allal, Loubna",
            2024,
            "https://huggingface.co/blog/cosmopedia",
        ),
        _arxiv(
            "gunasekar2023textbooks",
            "Textbooks Are All You Need",
            "Gunasekar, Suriya",
            2023,
            "2306.11644",
        ),
        _arxiv(
            "eldan2023tinystories",
            "TinyStories: How Small Can Language Models Be and Still Speak Coherent English?",
            "Eldan, Ronen",
            2023,
            "2305.07759",
        ),
        _arxiv(
            "gilardi2023chatgpt",
            "ChatGPT Outperforms Crowd-Workers for Text-Annotation Tasks",
            "Gilardi, Fabrizio",
            2023,
            "2303.15056",
        ),
        _arxiv(
            "li2023coannotating",
            "CoAnnotating: Uncertainty-Guided Work Allocation between Human and Large Language "
            "Models for Data Annotation",
            "Li, Minzhi",
            2023,
            "2310.15638",
        ),
        _arxiv(
            "ding2023ultrachat",
            "Enhancing Chat Language Models by Scaling High-quality Instructional Conversations",
            "Ding, Ning",
            2023,
            "2305.14233",
        ),
        _arxiv(
            "xu2023baize",
            "Baize: An Open-Source Chat Model with Parameter-Efficient Tuning on Self-Chat Data",
            "Xu, Canwen",
            2023,
            "2304.01196",
        ),
        _arxiv(
            "wei2023magicoder",
            "Magicoder: Empowering Code Generation with OSS-Instruct",
            "Wei, Yuxiang",
            2023,
            "2312.02120",
        ),
    )
}
