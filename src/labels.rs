//! Label values of metrics as types: a fieldless enum per label, with each
//! variant's value and the list of all of them, so every series can be
//! exported at zero from the start and no label value comes from a request.
//! Here, not in `ops::metrics`, because the store names its own labels too.

/// A fieldless enum of label values: each variant's value, and every
/// variant in the order the series are declared.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, each exported at zero from the start.
            pub(crate) const ALL: [$name; [$($value),+].len()] = [$($name::$variant,)+];

            /// The label value, as the exposition shows it.
            pub(crate) const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value,)+
                }
            }
        }
    };
}

pub(crate) use label_values;
