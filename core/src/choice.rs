//! Closed sets of names (`--model`, `--optimizer`, ...): one declaration gives the enum, its
//! names, parsing, the list for messages, and serde, so a name is spelled in one place and
//! flags, config files and sweeps accept and refuse the same words with the same message.

/// A closed set of names declared with [`choice!`](crate::choice!).
pub trait Choice: Sized + Copy + 'static {
    /// Every value, in the order messages and help list them.
    const ALL: &'static [Self];
    /// The name used on the command line and in config files.
    fn name(self) -> &'static str;

    /// The value named `s`, if any.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.name() == s)
    }

    /// `"a, b, c"`: the accepted names, for messages.
    fn names() -> String {
        Self::ALL.iter().map(|v| v.name()).collect::<Vec<_>>().join(", ")
    }

    /// What a bad name gets told: `expected one of a, b, c`.
    fn expected() -> String {
        format!("expected one of {}", Self::names())
    }
}

/// Declares a [`Choice`] enum: `choice! { /// doc  pub enum Kind { /// doc  A = "a", B = "b" } }`.
/// It derives `Debug, Clone, Copy, PartialEq, Eq, Hash`, and implements `Display`, `FromStr`
/// (error: `expected one of ...`) and serde as the names.
#[macro_export]
macro_rules! choice {
    ($(#[$meta:meta])* pub enum $ty:ident { $($(#[$vmeta:meta])* $variant:ident = $name:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $ty {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::choice::Choice for $ty {
            const ALL: &'static [Self] = &[$($ty::$variant),+];
            fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl $ty {
            /// Every value, in the order messages list them.
            pub const ALL: [$ty; [$(stringify!($variant)),+].len()] = [$($ty::$variant),+];

            /// The name used on the command line and in config files.
            pub fn name(self) -> &'static str {
                $crate::choice::Choice::name(self)
            }

            /// The value named `s`, if any.
            pub fn parse(s: &str) -> Option<Self> {
                $crate::choice::Choice::parse(s)
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$ty as $crate::choice::Choice>::parse(s).ok_or_else(<$ty as $crate::choice::Choice>::expected)
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(|e: String| <D::Error as serde::de::Error>::custom(format!("{s:?}: {e}")))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Choice;

    crate::choice! {
        /// A test set.
        pub enum Fruit {
            /// One.
            Apple = "apple",
            /// Two.
            BloodOrange = "blood-orange",
        }
    }

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct Basket {
        fruit: Fruit,
    }

    #[test]
    fn names_parse_and_serde_agree() {
        assert_eq!(Fruit::names(), "apple, blood-orange");
        assert_eq!(Fruit::ALL.map(Fruit::name), ["apple", "blood-orange"]);
        assert_eq!(Fruit::parse("apple"), Some(Fruit::Apple));
        assert_eq!("blood-orange".parse::<Fruit>(), Ok(Fruit::BloodOrange));
        assert_eq!("pear".parse::<Fruit>(), Err("expected one of apple, blood-orange".to_string()));
        let b: Basket = toml::from_str("fruit = \"blood-orange\"").unwrap();
        assert_eq!(b.fruit, Fruit::BloodOrange);
        assert_eq!(toml::to_string(&b).unwrap().trim(), "fruit = \"blood-orange\"");
        let e = toml::from_str::<Basket>("fruit = \"pear\"").unwrap_err().to_string();
        assert!(e.contains("\"pear\": expected one of apple, blood-orange") && e.contains("line 1"), "{e}");
    }
}
