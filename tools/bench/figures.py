# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""A figure of the table: its samples, baseline, ratio and target."""

import dataclasses
import operator
import statistics

COMPARE = {'<': operator.lt, '<=': operator.le, '>=': operator.ge}


@dataclasses.dataclass
class Target:
    op: str          # a key of COMPARE
    bound: float
    text: str
    on: str = 'ratio'  # or 'value'


@dataclasses.dataclass
class Figure:
    section: int     # the numbering: 1 clone ... 7 memory
    key: str
    title: str
    unit: str
    baseline_label: str
    target: Target = None
    summary: str = 'median'  # or 'max'
    samples: list = dataclasses.field(default_factory=list)
    baseline_samples: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    # Samples of the parts a baseline is made of (the floor's three).
    parts: dict = dataclasses.field(default_factory=dict)

    def _summary(self, samples, how):
        samples = [s for s in samples if s is not None]
        if not samples:
            return None
        return max(samples) if how == 'max' else statistics.median(samples)

    @property
    def value(self):
        return self._summary(self.samples, self.summary)

    @property
    def baseline(self):
        return self._summary(self.baseline_samples, 'median')

    @property
    def ratio(self):
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def met(self):
        if self.target is None:
            return None
        x = self.ratio if self.target.on == 'ratio' else self.value
        return None if x is None else \
            COMPARE[self.target.op](x, self.target.bound)

    @classmethod
    def from_dict(cls, fields):
        """The figure ``as_dict`` wrote (in a report's JSON)."""
        derived = ('value', 'baseline', 'ratio', 'met')
        fields = {k: v for k, v in fields.items() if k not in derived}
        if fields.get('target'):
            fields['target'] = Target(**fields['target'])
        return cls(**fields)

    def as_dict(self):
        return dict(dataclasses.asdict(self), value=self.value,
                    baseline=self.baseline, ratio=self.ratio, met=self.met)
